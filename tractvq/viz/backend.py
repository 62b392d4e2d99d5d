"""FURY, pygfx and wgpu: the optional rendering stack, set up so that it works headless.

Everything in :mod:`tractvq.viz` that draws goes through this module, which handles what a
user should never meet:

* the optional dependencies (the ``viz`` extra) are imported on first use, and a missing one
  raises :class:`MissingExtraError` naming the extra to install;
* with only an adapter that lacks the ``float32-filterable`` feature (the OpenGL/software
  adapter of a machine without a GPU, e.g. llvmpipe), pygfx's default device request fails;
  :func:`prepare_device` disables that feature before the first render, only when needed;
* an offscreen render of a FURY scene returns an ``(H, W, 3)`` uint8 array of exactly the
  requested size (pygfx renders at twice the resolution and filters down: anti-aliased);
* an interactive window is only attempted where a display exists and a graphics adapter
  can draw into it (otherwise GLFW or wgpu abort the whole process: GLFW without a display,
  wgpu when the only adapter is OpenGL without a surface it supports, as llvmpipe under
  Xvfb); :func:`prepare_window` checks both with a probe window and raises
  :class:`NoDisplayError` saying which is missing.

Verified with fury 2.0.0, pygfx 0.17.0, wgpu 0.32.0 and rendercanvas 2.7.2 (the versions
the ``viz`` extra pins) on llvmpipe through OpenGL, without a display, and under Xvfb.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np

from tractvq.errors import TractvqError

__all__ = [
    "EXTRA_HINT",
    "MissingExtraError",
    "NoDisplayError",
    "has_display",
    "offscreen_render",
    "open_window",
    "prepare_device",
    "prepare_window",
    "require",
]

#: How to install what rendering needs.
EXTRA_HINT = 'pip install "tractvq[viz]"'

#: The modules rendering needs.
RENDER_MODULES = ("fury", "pygfx", "wgpu", "rendercanvas", "matplotlib", "PIL")
#: Distribution names of modules named otherwise.
_DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn"}

_device_prepared = False


class MissingExtraError(TractvqError, ImportError):
    """An optional dependency of the ``viz`` extra is not installed.

    It is an :class:`ImportError` (what Python code expects) and a
    :class:`~tractvq.errors.TractvqError` (what the command line turns into one line).
    """


class NoDisplayError(TractvqError):
    """An interactive window was asked for where no display exists, or where no graphics
    adapter can draw into one."""


def require(*modules: str, purpose: str = "rendering") -> None:
    """Import optional dependencies, or say which extra provides them.

    Parameters
    ----------
    *modules : str
        Module names (default: everything rendering needs, :data:`RENDER_MODULES`).
    purpose : str, optional
        What needs them, for the message (``"tractvq render"``).

    Raises
    ------
    MissingExtraError
        If one of them cannot be imported.
    """
    for name in modules or RENDER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            distribution = _DISTRIBUTIONS.get(name, name)
            raise MissingExtraError(
                None, f"{purpose} needs {distribution}, which is not installed ({error}): {EXTRA_HINT}"
            ) from error


def prepare_device() -> None:
    """Configure pygfx's GPU device for this machine, once, before the first render.

    pygfx asks for the ``float32-filterable`` feature by default; adapters without it (the
    OpenGL/software adapter used where there is no GPU) then refuse to create a device. When
    the adapter pygfx will use lacks the feature, it is disabled
    (``pygfx.renderers.wgpu.enable_wgpu_features("!float32-filterable")``). Idempotent; does
    nothing once a device exists.
    """
    global _device_prepared
    if _device_prepared:
        return
    require("pygfx", "wgpu")
    import pygfx
    import wgpu

    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        if "float32-filterable" not in adapter.features:
            with _quiet_wgpu():  # it warns that it overrides pygfx's default, which is the point
                pygfx.renderers.wgpu.enable_wgpu_features("!float32-filterable")
    except RuntimeError as error:
        if "after it is created" not in str(error):  # a device exists already: it works as it is
            raise
    _device_prepared = True


@contextlib.contextmanager
def _quiet_wgpu():
    """Silence wgpu's warnings (the GL backend's notes on texture views) for a while."""
    logger = logging.getLogger("wgpu")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 from an RGB(A) array of uint8 or floats in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    width, height = (int(value) for value in size)
    if width < 16 or height < 16 or width > 8192 or height > 8192:
        raise ValueError(f"image size must be between 16 and 8192 pixels per side, got {tuple(size)}")
    return width, height


def offscreen_render(scene, camera, size: Sequence[int] = (400, 400)) -> np.ndarray:
    """Render a FURY scene offscreen.

    Parameters
    ----------
    scene : fury.window.Scene
        What to draw (its main scene, then its UI scene).
    camera : pygfx.Camera
        How to look at it (see :func:`tractvq.viz.camera.frame_camera`); drawn as it is,
        without FURY's automatic re-framing.
    size : (int, int), optional
        Width and height in pixels.

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    width, height = _check_size(size)
    prepare_device()
    import pygfx
    from rendercanvas.offscreen import OffscreenRenderCanvas

    canvas = OffscreenRenderCanvas(size=(width, height), pixel_ratio=1)
    with _quiet_wgpu():
        renderer = pygfx.renderers.WgpuRenderer(canvas)  # renders at 2x and filters down

        def draw() -> None:
            renderer.render(scene.main_scene, camera, flush=False)
            renderer.render(scene.ui_scene, scene.ui_camera)

        canvas.request_draw(draw)
        image = np.asarray(canvas.draw())
    canvas.close()
    return _as_rgb(image)


def has_display() -> bool:
    """Whether an interactive window can be opened here.

    On Linux and other X11/Wayland systems this needs ``DISPLAY`` or ``WAYLAND_DISPLAY`` and
    a GLFW that can connect to it; macOS and Windows always have a display.
    """
    if sys.platform in ("darwin", "win32"):
        return True
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        import glfw
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(glfw.init())
        except Exception:  # noqa: BLE001 - any failure to connect means no usable display
            return False


def _device_exists() -> bool:
    from pygfx.renderers.wgpu.engine.shared import Shared

    return Shared.get_instance() is not None


def prepare_window() -> None:
    """Check that an interactive window can be shown, and set pygfx's device up for it.

    Call it before the first render of the process when a window will follow: an OpenGL
    adapter found without a window cannot draw into one later.

    Raises
    ------
    NoDisplayError
        Without a display; where no graphics adapter can draw into a window (e.g. only
        OpenGL on a software renderer under a virtual display, where wgpu would abort the
        process); or when offscreen renders already created an OpenGL device in this
        process.
    """
    if not has_display():
        raise NoDisplayError(
            None, "no display: an interactive window needs a graphical display (DISPLAY or WAYLAND_DISPLAY"
            " is not set or cannot be opened); render an image instead (-o OUT.png)",
        )
    require("pygfx", "wgpu", "rendercanvas", purpose="an interactive window")
    import pygfx
    import wgpu
    from rendercanvas.auto import RenderCanvas

    probe = RenderCanvas(size=(16, 16), title="tractvq")
    try:
        with _quiet_wgpu():
            adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance", canvas=probe)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise NoDisplayError(
            None, f"a display exists but no graphics adapter here can draw into a window ({reason});"
            " install a Vulkan driver (e.g. Mesa's lavapipe) or render an image instead (-o OUT.png)",
        ) from error
    finally:
        probe.close()
    if _device_exists():
        device = pygfx.renderers.wgpu.get_shared().device
        if device.adapter.info.get("backend_type") == "OpenGL":
            raise NoDisplayError(
                None, "offscreen renders already set up an OpenGL device that cannot draw into a window;"
                " open the window before rendering images in this process",
            )
        return
    with _quiet_wgpu():
        pygfx.renderers.wgpu.select_adapter(adapter)
        if "float32-filterable" not in adapter.features:
            pygfx.renderers.wgpu.enable_wgpu_features("!float32-filterable")
    global _device_prepared
    _device_prepared = True


def open_window(scenes: Sequence, cameras: Sequence, *, size: Sequence[int] = (800, 600),
                title: str = "tractvq", window_type: str = "default"):
    """A FURY window showing scenes side by side, each with its own camera and controls.

    Parameters
    ----------
    scenes : sequence of fury.window.Scene
    cameras : sequence of pygfx.Camera
        One per scene, e.g. from :func:`tractvq.viz.camera.frame_camera`.
    size : (int, int), optional
        Window size in pixels.
    title : str, optional
    window_type : str, optional
        FURY's window type: ``"default"`` (a desktop window), ``"qt"``, ``"jupyter"`` or
        ``"offscreen"``.

    Returns
    -------
    fury.window.ShowManager
        Call ``.start()`` to show the window until it is closed.

    Raises
    ------
    NoDisplayError
        For a desktop window that cannot be shown here (see :func:`prepare_window`).
    """
    if window_type in ("default", "glfw"):
        prepare_window()
    else:
        prepare_device()
    from fury import window

    states = [camera.get_state() for camera in cameras]

    def keep_framing(event=None) -> None:
        # FURY re-frames every viewport on its bounding sphere at each resize (loosely, for an
        # elongated bundle); put tractvq's framing back after it.
        for camera, state in zip(cameras, states):
            camera.set_state(state)

    manager = window.ShowManager(
        scene=list(scenes), camera=list(cameras), screen_config=[1] * len(scenes), size=tuple(int(v) for v in size),
        title=title, window_type=window_type,
    )
    keep_framing()
    fury_resize = getattr(manager, "_resize", None)
    if callable(fury_resize):  # FURY 2.0 re-frames in ShowManager._resize: frame again right after it
        def resize(size) -> None:
            fury_resize(size)
            keep_framing()

        manager._resize = resize
    else:  # pragma: no cover - another FURY version
        manager.renderer.add_event_handler(keep_framing, "resize")
    return manager
