"""Distances between streamlines and their reconstructions, in millimetres.

The minimum average direct-flip distance (MDF) of two streamlines ``a`` and ``b`` of ``P``
points each is the smaller of the mean point-to-point distance with ``b`` as it is and with
``b`` reversed (Garyfallidis et al., "QuickBundles, a method for tractography
simplification", Front. Neurosci. 2012; DIPY's
:func:`dipy.tracking.distances.bundles_distances_mdf`)::

    MDF(a, b) = min(mean_i |a_i - b_i|, mean_i |a_i - b_{P-1-i}|)

The functions here compute it for pairs of corresponding streamlines (row ``i`` of the
input against row ``i`` of its reconstruction), vectorised in float64; the tests check them
against DIPY. They are the small exact core that evaluation builds on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_mdf_mm", "pairwise_mdf"]


def pairwise_mdf(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """MDF of corresponding streamlines.

    Parameters
    ----------
    first, second : ndarray, shape (..., P, 3)
        Streamlines with the same number of points, in the same units (e.g. mm).

    Returns
    -------
    ndarray, shape (...), float64
        ``MDF(first[...], second[...])`` for every leading index.

    Raises
    ------
    ValueError
        If the shapes differ or the last axis is not of size 3.
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"streamline arrays must have the same shape, got {first.shape} and {second.shape}")
    if first.ndim < 2 or first.shape[-1] != 3:
        raise ValueError(f"expected streamlines of shape (..., P, 3), got {first.shape}")
    direct = np.linalg.norm(first - second, axis=-1).mean(axis=-1)  # (...)
    flipped = np.linalg.norm(first - second[..., ::-1, :], axis=-1).mean(axis=-1)  # (...)
    return np.minimum(direct, flipped)


def mean_mdf_mm(original_mm: np.ndarray, reconstruction_mm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean MDF between each group's real streamlines and their reconstructions.

    Parameters
    ----------
    original_mm, reconstruction_mm : ndarray, shape (G, S, P, 3)
        Groups in millimetres, as :meth:`tractvq.bundles.GroupedBundles.denormalize`
        returns them.
    mask : ndarray of bool, shape (G, S)
        The rows that count: the one copy of each streamline (``GroupedBundles.mask``);
        repeated rows that complete a bundle's last group are left out.

    Returns
    -------
    ndarray, shape (G,), float64
        Per group, the mean over its masked rows of ``MDF(original, reconstruction)`` in
        millimetres; NaN for a group without masked rows.

    Raises
    ------
    ValueError
        If the shapes disagree.
    """
    original_mm = np.asarray(original_mm)
    mask = np.asarray(mask, dtype=bool)
    if original_mm.ndim != 4 or mask.shape != original_mm.shape[:2]:
        raise ValueError(
            f"expected groups (G, S, P, 3) and a mask (G, S), got {original_mm.shape} and {mask.shape}"
        )
    distances = pairwise_mdf(original_mm, reconstruction_mm)  # (G, S)
    counts = mask.sum(axis=1)  # (G,)
    totals = np.where(mask, distances, 0.0).sum(axis=1)  # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
