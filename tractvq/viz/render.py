"""FURY scenes of bundles: one bundle, or an original beside (or under) its reconstructions.

::

    from tractvq.viz import render_bundle, compare

    image = render_bundle(streamlines, view="axial", size=(400, 300))    # (300, 400, 3) uint8
    comparison = compare(original, [reconstruction], colouring="error")   # scenes + camera
    image = comparison.render()                                           # panels + colour bar
    comparison.show()                                                     # a window, where a display exists

Streamlines are drawn as FURY line actors, coloured per point by local orientation or per
streamline by their MDF to the original (:mod:`tractvq.viz.colours`). Line actors rather than
``fury.actor.streamtube``: its default GPU backend frames bundles badly and its CPU backend
takes tens of seconds for a few thousand streamlines; lines render a whole subject in a
second. The panels of one figure share one camera (:func:`tractvq.viz.camera.frame_camera`
on all their points), so sizes and positions compare across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tractvq.viz import backend
from tractvq.viz.camera import frame_camera
from tractvq.viz.colours import (
    ERROR_CMAP,
    error_colormap,
    error_colours,
    orientation_colours,
    streamline_errors,
)
from tractvq.viz.images import colour_bar, hstack, parse_colour, title_panel, trim_rows, vstack

__all__ = [
    "COLOURINGS",
    "REFERENCE_GREY",
    "Comparison",
    "bundle_actor",
    "bundle_scene",
    "compare",
    "compare_files",
    "default_thickness",
    "render_bundle",
    "render_panels",
    "render_scene",
]

#: How streamlines can be coloured.
COLOURINGS = ("orientation", "error")
#: Colour of the original bundle when reconstructions are coloured by their error.
REFERENCE_GREY = (0.62, 0.62, 0.62)


def default_thickness(size: Sequence[int]) -> float:
    """Line thickness in pixels for an image of ``size``: 2 px at 400 px, at least 1."""
    return max(1.0, min(int(size[0]), int(size[1])) / 200.0)


def _lines(streamlines) -> list[np.ndarray]:
    lines = [np.asarray(s, np.float32).reshape(-1, 3) for s in streamlines]
    return [line for line in lines if len(line) >= 2 and np.isfinite(line).all()]


def bundle_actor(streamlines, colours="orientation", *, thickness: float = 2.0):
    """A FURY line actor of streamlines.

    Parameters
    ----------
    streamlines : sequence of ndarray (P_i, 3) or ndarray (N, P, 3)
        In millimetres (RASMM). Streamlines of fewer than two points or with non-finite
        coordinates are left out.
    colours : "orientation" or ndarray (N, 3) or (float, float, float), optional
        Per-point orientation colours, one colour per streamline, or one for all.
    thickness : float, optional
        Line width in pixels.

    Returns
    -------
    fury.actor.LineActor
        Placed where its points are (FURY 2.0 moves a line actor by its first point).

    Raises
    ------
    ValueError
        Without a streamline to draw, or with colours that do not fit.
    """
    backend.require(purpose="rendering")
    from fury import actor

    given = [np.asarray(s, np.float32).reshape(-1, 3) for s in streamlines]
    keep = [len(s) >= 2 and np.isfinite(s).all() for s in given]
    lines = [s for s, kept in zip(given, keep) if kept]
    if not lines:
        raise ValueError("no streamline to draw (none has two finite points)")
    if isinstance(colours, str):
        if colours != "orientation":
            raise ValueError(f"colours must be 'orientation', an (N, 3) array or one RGB colour, got {colours!r}")
        vertex_colours = np.concatenate(orientation_colours(lines))  # (sum P_i, 3)
    else:
        values = np.asarray(colours, np.float32)
        if values.shape == (3,):
            vertex_colours = np.concatenate([np.broadcast_to(values, (len(line), 3)) for line in lines])
        elif values.ndim == 2 and values.shape == (len(given), 3):
            vertex_colours = np.concatenate([np.broadcast_to(c, (len(line), 3)) for c, line in zip(values[keep], lines)])
        else:
            raise ValueError(f"expected one colour per streamline ({len(given)}, 3) or one RGB colour, got {values.shape}")
    line_actor = actor.line(lines, colors=vertex_colours)
    line_actor.material.thickness = float(thickness)
    low = np.min([line.min(axis=0) for line in lines], axis=0)
    placed = line_actor.get_world_bounding_box()[0]
    line_actor.local.position = np.asarray(line_actor.local.position) + (low - placed)
    return line_actor


def bundle_scene(*actors, background=(1, 1, 1), scene=None):
    """A FURY scene holding ``actors`` (or ``scene`` with them added).

    Parameters
    ----------
    *actors : fury actors
    background : colour, optional
        See :func:`tractvq.viz.images.parse_colour`.
    scene : fury.window.Scene, optional
        Add to this scene instead of a new one (its background is kept).

    Returns
    -------
    fury.window.Scene
    """
    backend.require(purpose="rendering")
    from fury import window

    if scene is None:
        scene = window.Scene(background=(*parse_colour(background), 1.0))
    scene.add(*actors)
    return scene


def render_scene(scene, camera, size: Sequence[int] = (400, 400)) -> np.ndarray:
    """Render a FURY scene offscreen: ``(H, W, 3)`` uint8 (see :func:`tractvq.viz.backend.offscreen_render`)."""
    return backend.offscreen_render(scene, camera, size)


def render_bundle(streamlines, *, view: str = "sagittal", size: Sequence[int] = (400, 400), background="white",
                  colours="orientation", thickness: float | None = None, margin: float = 0.05) -> np.ndarray:
    """One bundle, framed on itself, as an image.

    Parameters
    ----------
    streamlines : sequence of ndarray (P_i, 3) or ndarray (N, P, 3)
        Millimetres (RASMM).
    view : {"sagittal", "axial", "coronal"}, optional
    size : (int, int), optional
        Width and height in pixels.
    background : colour, optional
    colours : optional
        See :func:`bundle_actor`.
    thickness : float, optional
        Line width in pixels (default: :func:`default_thickness`).
    margin : float, optional
        See :func:`tractvq.viz.camera.frame_camera`.

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    thickness = default_thickness(size) if thickness is None else thickness
    scene = bundle_scene(bundle_actor(streamlines, colours, thickness=thickness), background=background)
    return render_scene(scene, frame_camera(_lines(streamlines), view, size=size, margin=margin), size)


def render_panels(bundles: Sequence, *, titles: Sequence[str] | None = None, colours: Sequence | None = None,
                  view: str = "sagittal", size: Sequence[int] = (300, 300), background="white",
                  shared_frame: bool = True, thickness: float | None = None, gap: int = 4,
                  trim: bool = False) -> np.ndarray:
    """Several bundles side by side, one panel each, titled.

    Parameters
    ----------
    bundles : sequence of (sequence of ndarray (P_i, 3))
    titles : sequence of str, optional
        One per panel, written at its top left.
    colours : sequence, optional
        One colouring per panel (see :func:`bundle_actor`); default orientation.
    view, size, background, thickness
        See :func:`render_bundle`; ``size`` is one panel's.
    shared_frame : bool, optional
        One camera framed on all panels' points (positions and sizes compare), or each
        panel framed on its own bundle (shapes compare).
    gap : int, optional
        Pixels between panels.
    trim : bool, optional
        Cut the rows that are empty in every panel (flat bundles in a row).

    Returns
    -------
    ndarray, shape (height, n * width + (n - 1) * gap, 3), uint8
        ``height`` is the panel height (less trimmed rows) plus the titles' band.
    """
    if not len(bundles):
        raise ValueError("no bundle to render")
    rgb = parse_colour(background)
    thickness = default_thickness(size) if thickness is None else thickness
    lines = [_lines(bundle) for bundle in bundles]
    shared = frame_camera([line for bundle in lines for line in bundle], view, size=size) if shared_frame else None
    images = []
    for index, bundle in enumerate(bundles):
        scene = bundle_scene(bundle_actor(bundle, "orientation" if colours is None else colours[index],
                                          thickness=thickness), background=rgb)
        camera = shared if shared is not None else frame_camera(lines[index], view, size=size)
        images.append(render_scene(scene, camera, size))
    if trim:
        images = trim_rows(images, background=rgb)
    images = [title_panel(image, titles[index] if titles else "", background=rgb) for index, image in enumerate(images)]
    return hstack(images, gap=gap, background=rgb)


@dataclass
class Comparison:
    """An original bundle and its reconstructions as FURY scenes, ready to render or show.

    Attributes
    ----------
    scenes : list of fury.window.Scene
        One per panel (one in all when overlaid).
    camera : pygfx.OrthographicCamera
        The shared frame of every panel.
    titles : list of str
        One per panel.
    size : (int, int)
        One panel's width and height.
    background : (float, float, float)
    colouring : {"orientation", "error"}
    errors : list of ndarray (N,)
        Per reconstruction, the MDF (mm) of each streamline to its original (error colouring).
    error_max : float or None
        Top of the error colour scale.
    cmap : str
        Colour map of the errors.
    """

    scenes: list
    camera: object
    titles: list[str]
    size: tuple[int, int]
    background: tuple[float, float, float]
    colouring: str
    errors: list[np.ndarray] = field(default_factory=list)
    error_max: float | None = None
    cmap: str = ERROR_CMAP

    def render_panels(self) -> list[np.ndarray]:
        """Each panel as an ``(H, W, 3)`` uint8 image, without titles."""
        return [render_scene(scene, self.camera, self.size) for scene in self.scenes]

    def render(self, *, gap: int = 4) -> np.ndarray:
        """The figure: titled panels side by side, and a colour bar below for error colouring.

        Returns
        -------
        ndarray, shape (H, W, 3), uint8
            ``H`` is the panel height (plus the colour bar's strip), ``W`` the panels' widths
            and gaps.
        """
        panels = [title_panel(image, title, background=self.background)
                  for image, title in zip(self.render_panels(), self.titles)]
        figure = hstack(panels, gap=gap, background=self.background)
        if self.colouring == "error":
            strip = max(60, min(90, self.size[1] // 5))
            bar = colour_bar(min(figure.shape[1], max(360, self.size[0])), strip, self.error_max,
                             cmap=error_colormap(self.cmap), background=self.background)
            figure = vstack([figure, bar], background=self.background)
        return figure

    def show(self, *, window_type: str = "default"):
        """Open an interactive FURY window with the panels side by side.

        Returns
        -------
        fury.window.ShowManager
            Already started (returns when the window is closed) for a desktop window;
            for other window types, call ``.start()`` yourself.

        Raises
        ------
        tractvq.viz.backend.NoDisplayError
            Where no display exists.
        """
        manager = backend.open_window(self.scenes, [self.camera] * len(self.scenes),
                                      size=(self.size[0] * len(self.scenes), self.size[1]),
                                      title=" | ".join(self.titles), window_type=window_type)
        if window_type in ("default", "glfw"):
            manager.start()
        return manager


def compare(original, reconstructions: Sequence = (), *, titles: Sequence[str] | None = None, overlay: bool = False,
            colouring: str = "orientation", view: str = "sagittal", size: Sequence[int] = (400, 400),
            background="white", error_max: float | None = None, cmap: str = ERROR_CMAP,
            thickness: float | None = None) -> Comparison:
    """Scenes of an original bundle and its reconstructions, side by side or overlaid.

    Parameters
    ----------
    original : sequence of ndarray (P_i, 3)
        Millimetres (RASMM).
    reconstructions : sequence of (sequence of ndarray (P_i, 3)), optional
        Same streamlines in the same order for error colouring (as ``tractvq decode`` and
        ``tractvq reconstruct`` write them).
    titles : sequence of str, optional
        One per input (original first); default ``original``, ``reconstruction 1``, ...
    overlay : bool, optional
        One panel: the original in grey, the reconstructions drawn over it.
    colouring : {"orientation", "error"}, optional
        ``error``: each reconstructed streamline coloured by its MDF to its original (the
        original in grey), with a colour bar.
    view : {"sagittal", "axial", "coronal"}, optional
    size : (int, int), optional
        Width and height of one panel in pixels.
    background : colour, optional
        See :func:`tractvq.viz.images.parse_colour`.
    error_max : float, optional
        Top of the error scale in mm (default: the 98th percentile of all errors, so that
        a few outliers do not wash out the rest).
    cmap : str, optional
        Colour map of the errors.
    thickness : float, optional
        Line width in pixels (default: :func:`default_thickness`).

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        For an unknown colouring, error colouring without a reconstruction or with one whose
        streamline count differs, or titles that do not match the inputs.
    """
    if colouring not in COLOURINGS:
        raise ValueError(f"colouring must be one of {', '.join(COLOURINGS)}, got {colouring!r}")
    reconstructions = list(reconstructions)
    if colouring == "error" and not reconstructions:
        raise ValueError("error colouring needs at least one reconstruction to compare with the original")
    if titles is None:
        titles = ["original"] + [f"reconstruction {i + 1}" if len(reconstructions) > 1 else "reconstruction"
                                 for i in range(len(reconstructions))]
    titles = list(titles)
    if len(titles) != 1 + len(reconstructions):
        raise ValueError(f"expected {1 + len(reconstructions)} titles (original first), got {len(titles)}")
    size = tuple(int(v) for v in size)
    rgb = parse_colour(background)
    thickness = default_thickness(size) if thickness is None else thickness
    original = [np.asarray(s, np.float64).reshape(-1, 3) for s in original]
    reconstructions = [[np.asarray(s, np.float64).reshape(-1, 3) for s in bundle] for bundle in reconstructions]
    errors = [streamline_errors(original, bundle) for bundle in reconstructions] if colouring == "error" else []
    if colouring == "error":
        finite = np.concatenate(errors)
        finite = finite[np.isfinite(finite)]
        if error_max is None:
            error_max = float(np.percentile(finite, 98)) if len(finite) else 1.0
        error_max = max(float(error_max), 1e-6)
        colourings = [REFERENCE_GREY] + [error_colours(values, error_max, cmap=cmap) for values in errors]
    else:
        colourings = [REFERENCE_GREY if overlay and reconstructions else "orientation"] + ["orientation"] * len(reconstructions)
    actors = [bundle_actor(bundle, colours, thickness=thickness)
              for bundle, colours in zip([original, *reconstructions], colourings)]
    if overlay:
        for actor in actors[1:]:  # reconstructions over the original, where they cover it
            actor.material.depth_test = False
            actor.render_order = 1
        scenes = [bundle_scene(*actors, background=rgb)]
        titles = [" + ".join(titles) if len(titles) <= 3 else f"{titles[0]} + {len(titles) - 1} reconstructions"]
    else:
        scenes = [bundle_scene(actor, background=rgb) for actor in actors]
    camera = frame_camera([line for bundle in (original, *reconstructions) for line in bundle], view, size=size)
    return Comparison(scenes, camera, titles, size, rgb, colouring, errors, error_max if colouring == "error" else None, cmap)


def compare_files(original, reconstructions: Sequence = (), *, bundle: str | None = None, reference=None, model=None,
                  titles: Sequence[str] | None = None, **options) -> Comparison:
    """:func:`compare` on files: tractograms, folders (one bundle picked) or codes files.

    Parameters
    ----------
    original : str or os.PathLike
    reconstructions : sequence of str or os.PathLike, optional
    bundle, reference, model
        See :func:`tractvq.viz.inputs.load_bundle` (``bundle`` picks the same bundle from
        every folder or codes file).
    titles : sequence of str, optional
        One per file; default: the file names (``BUNDLE (folder)`` for a folder).
    **options
        The other keywords of :func:`compare`.

    Returns
    -------
    Comparison

    Raises
    ------
    TractogramError
        If a file cannot be read, a bundle is not picked, or (for error colouring) a
        reconstruction holds another number of streamlines than the original.
    """
    from tractvq.errors import TractogramError
    from tractvq.viz.inputs import load_bundle

    shown = [load_bundle(path, bundle=bundle, reference=reference, model=model) for path in (original, *reconstructions)]
    if options.get("colouring") == "error":
        for item in shown[1:]:
            if len(item.streamlines) != len(shown[0].streamlines):
                raise TractogramError(
                    item.path, f"holds {len(item.streamlines)} streamlines, the original {shown[0].path} holds"
                    f" {len(shown[0].streamlines)}: error colouring needs the same streamlines in the same order"
                    " (as tractvq reconstruct and tractvq decode write them)",
                )
    titles = [item.label for item in shown] if titles is None or not len(titles) else list(titles)
    return compare(shown[0].streamlines, [item.streamlines for item in shown[1:]], titles=titles, **options)
