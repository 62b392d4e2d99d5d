"""Colours of streamlines: local orientation, or distance to the original.

* :func:`orientation_colours`: the usual directionally-encoded colours, RGB = ``|t|`` for the
  unit tangent ``t`` at each point (red left-right, green anterior-posterior, blue
  inferior-superior).
* :func:`streamline_errors`: the MDF (:func:`tractvq.metrics.pairwise_mdf`) of each
  reconstructed streamline to its original, in millimetres, and :func:`error_colours` to
  map it through a colour map (:func:`error_colormap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tractvq.metrics import pairwise_mdf

__all__ = ["ERROR_CMAP", "error_colormap", "error_colours", "orientation_colours", "streamline_errors"]

#: Default colour map of the error colouring (matplotlib's ``plasma``, its palest tenth cut
#: so that the largest errors stay visible on a white background).
ERROR_CMAP = "plasma"


def orientation_colours(streamlines: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-point colours from the local direction of each streamline.

    Parameters
    ----------
    streamlines : sequence of ndarray, shape (P_i, 3)

    Returns
    -------
    list of ndarray, shape (P_i, 3), float32
        ``|t|`` of the unit tangent (central differences), in [0, 1]; grey for a streamline
        of one point or without extent.
    """
    colours = []
    for streamline in streamlines:
        points = np.asarray(streamline, np.float64)
        if len(points) < 2:
            colours.append(np.full((len(points), 3), 0.5, np.float32))
            continue
        tangents = np.abs(np.gradient(points, axis=0))  # (P, 3)
        norms = np.linalg.norm(tangents, axis=1, keepdims=True)
        unit = np.where(norms > 0, tangents / np.where(norms > 0, norms, 1.0), 0.5)
        colours.append(unit.astype(np.float32))
    return colours


def _as_points(streamlines: Sequence[np.ndarray], n_points: int) -> np.ndarray:
    """``(N, n_points, 3)``: as they are when all have ``n_points`` points, else resampled."""
    if all(len(s) == n_points for s in streamlines):
        return np.asarray([np.asarray(s, np.float64) for s in streamlines]).reshape(len(streamlines), n_points, 3)
    from dipy.tracking.streamline import set_number_of_points

    resampled = set_number_of_points([np.asarray(s, np.float64) for s in streamlines], nb_points=n_points)
    return np.asarray(resampled).reshape(len(streamlines), n_points, 3)


def streamline_errors(original: Sequence[np.ndarray], reconstruction: Sequence[np.ndarray], *,
                      n_points: int | None = None) -> np.ndarray:
    """MDF of each reconstructed streamline to the original streamline it stands for.

    Parameters
    ----------
    original, reconstruction : sequence of ndarray, shape (P_i, 3)
        Corresponding streamlines (same count and order, as ``tractvq decode`` and
        ``tractvq reconstruct`` write them), in millimetres.
    n_points : int, optional
        Points to compare at; default: the common number of points when every streamline
        of both has the same, else 64 (resampled with DIPY).

    Returns
    -------
    ndarray, shape (N,), float64
        Millimetres.

    Raises
    ------
    ValueError
        If the counts differ.
    """
    if len(original) != len(reconstruction):
        raise ValueError(
            f"error colouring needs the same streamlines in the same order: {len(reconstruction)}"
            f" reconstructed streamlines for {len(original)} original ones"
        )
    if not len(original):
        return np.empty(0)
    if n_points is None:
        lengths = {len(s) for s in original} | {len(s) for s in reconstruction}
        n_points = lengths.pop() if len(lengths) == 1 else 64
    return pairwise_mdf(_as_points(original, n_points), _as_points(reconstruction, n_points))


def error_colormap(name: str = ERROR_CMAP):
    """The colour map of error colouring: matplotlib's ``name`` without its palest tenth.

    Parameters
    ----------
    name : str, optional
        A matplotlib colour map name.

    Returns
    -------
    matplotlib.colors.Colormap

    Raises
    ------
    ValueError
        For an unknown name (the message lists a few known ones).
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    try:
        base = matplotlib.colormaps[name]
    except KeyError as error:
        raise ValueError(f"unknown colour map {name!r} (e.g. plasma, viridis, magma, cividis)") from error
    return ListedColormap(base(np.linspace(0.0, 0.9, 256)), name=f"{name}_cut")


def error_colours(errors: np.ndarray, vmax: float, *, cmap: str = ERROR_CMAP) -> np.ndarray:
    """Colours of per-streamline errors on the scale ``[0, vmax]``.

    Parameters
    ----------
    errors : ndarray, shape (N,)
    vmax : float
        The error shown with the last colour (larger ones too).
    cmap : str, optional
        See :func:`error_colormap`.

    Returns
    -------
    ndarray, shape (N, 3), float32
    """
    if not vmax > 0:
        raise ValueError(f"the top of the error scale must be > 0, got {vmax!r}")
    fractions = np.clip(np.asarray(errors, np.float64) / vmax, 0.0, 1.0)
    return error_colormap(cmap)(fractions)[:, :3].astype(np.float32)
