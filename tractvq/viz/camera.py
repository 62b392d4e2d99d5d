"""Standard views and automatic framing of a bundle.

Coordinates are RASMM (x to the subject's right, y anterior, z superior). The views:

============  =============================  ============================================
view          camera                         image
============  =============================  ============================================
sagittal      on the subject's left           anterior on the left, superior up
axial         above the head                  the subject's right on the right, anterior up
coronal       behind the head                 the subject's right on the right, superior up
============  =============================  ============================================

(axial and coronal in the neurological convention). The camera is orthographic, so sizes
compare across panels, and :func:`frame_camera` fits it to the projected bounding box of the
points: the bundle is centred and fills the image up to a margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["VIEWS", "frame_camera", "view_axes"]

#: View name -> (direction the camera looks along, the image's up), in RAS.
VIEWS = {
    "sagittal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "axial": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "coronal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}


def view_axes(view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The camera's forward, up and image-right directions for a standard view.

    Parameters
    ----------
    view : {"sagittal", "axial", "coronal"}

    Returns
    -------
    forward, up, right : ndarray, shape (3,)
        Unit vectors in RAS; ``right = forward x up``.

    Raises
    ------
    ValueError
        For an unknown view.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    forward, up = (np.asarray(vector, np.float64) for vector in VIEWS[view])
    return forward, up, np.cross(forward, up)


def _finite_points(points) -> np.ndarray:
    if isinstance(points, np.ndarray):
        flat = points.reshape(-1, 3)
    else:
        flat = np.concatenate([np.asarray(p, np.float64).reshape(-1, 3) for p in points]) if len(points) else np.empty((0, 3))
    flat = np.asarray(flat, np.float64)
    flat = flat[np.isfinite(flat).all(axis=1)]
    if not len(flat):
        raise ValueError("nothing to frame: no finite points")
    return flat


def frame_camera(points, view: str = "sagittal", *, size: Sequence[int] = (400, 400), margin: float = 0.05):
    """An orthographic camera looking at ``points`` from a standard view, framed on them.

    Parameters
    ----------
    points : ndarray (..., 3) or sequence of ndarray (P_i, 3)
        Everything that must be in the image (e.g. all streamlines of all panels, so that
        panels share one frame), in RASMM.
    view : {"sagittal", "axial", "coronal"}, optional
    size : (int, int), optional
        The image's width and height, whose aspect the frame takes.
    margin : float, optional
        Empty border on each side, as a fraction of the frame.

    Returns
    -------
    pygfx.OrthographicCamera
        Centred on the projected bounding box of the points, which fills the image's width
        or height up to ``margin``.

    Raises
    ------
    ValueError
        For an unknown view, no finite point, or a negative margin.
    """
    from tractvq.viz.backend import require

    require("pygfx")
    import pygfx

    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    forward, up, right = view_axes(view)
    flat = _finite_points(points)
    across, upward, depth = flat @ right, flat @ up, flat @ forward  # (N,) each
    centre = (right * (across.min() + across.max()) + up * (upward.min() + upward.max())
              + forward * (depth.min() + depth.max())) / 2
    width = max(float(np.ptp(across)), 1e-3)
    height = max(float(np.ptp(upward)), 1e-3)
    aspect = float(size[0]) / float(size[1])
    if width / height < aspect:
        width = height * aspect
    else:
        height = width / aspect
    scale = 1.0 / (1.0 - 2.0 * margin)
    camera = pygfx.OrthographicCamera(width * scale, height * scale, maintain_aspect=True)
    thickness = float(np.ptp(depth)) + 1.0
    distance = thickness + max(width, height)
    camera.world.reference_up = up
    camera.local.position = centre - forward * distance
    camera.look_at(centre)
    camera.depth_range = (distance - thickness, distance + thickness)
    return camera
