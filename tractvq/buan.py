"""BUAN (bundle analytics shape similarity) of reconstructed groups, and its protocols.

BUAN (Chandio et al., "Bundle analytics, a computational framework for investigating the
shapes and profiles of brain pathways across populations", Sci. Rep. 2020) is DIPY's
:func:`dipy.segment.bundles.bundle_shape_similarity`. The published VQ-Diff table scores every
64-streamline group of the validation split in the model's normalised coordinates with
``clust_thr=[0]`` and ``threshold=0.05``: :func:`protocol` ``"paper"``. That threshold is
relative to the normalisation: with the published global min-max it is 0.05 of half the data's
extent, with tractvq's per-group normalisation it is 0.05 of each group's own scale, so only the
``"mm"`` protocol (DIPY's 6 mm by default) compares models trained with different
preprocessing. BUAN saturates (a 3 mm per-point noise still scores 1.0 at 6 mm), so tables
always show the MDF next to it.

How the fast BUAN is exact
--------------------------
With ``clust_thr=[0]`` DIPY's QuickBundlesX puts every streamline in its own cluster (a
streamline joins a cluster only at distance 0: exact duplicates), so the centroids are the
input streamlines resampled to 20 points in float32, in an order and orientation that depend
on the random generator. BUAN then resamples them again to 20 points, takes
:func:`~dipy.tracking.distances.bundles_distances_mdf` and counts the rows and columns whose
minimum is below the threshold. Counts do not depend on the order; the orientation changes a
distance by a few units in the last place (MDF is flip-symmetric up to summation order).
:func:`buan_scores` therefore computes the same thing batched over groups with DIPY's own
primitives, and hands a group to DIPY itself (with the same generator) whenever the shortcut
could differ: duplicate streamlines, or a minimum distance within a small margin of the
threshold. Scores are identical to the plain sequential loop :func:`buan_scores_dipy`
(tested on real groups), for any random generator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

__all__ = ["PROTOCOLS", "Protocol", "buan_scores", "buan_scores_dipy", "group_rng", "protocol"]

#: BUAN protocols :func:`protocol` knows.
PROTOCOLS = ("mm", "paper")
#: Points DIPY resamples streamlines and centroids to in BUAN (``cluster_bundle``, ``ba_analysis``).
_BUAN_POINTS = 20
#: Margin around the threshold, relative to (threshold + largest |coordinate|), inside which a
#: group is scored by DIPY itself. The centroids' orientation moves a distance by a few float32
#: ulps: at most 1.9e-6 mm measured on real groups of coordinates up to 97 mm, 50 times below
#: the margin there (1e-4 mm).
_MARGIN = 1e-6


@dataclass(frozen=True)
class Protocol:
    """How BUAN is computed.

    Attributes
    ----------
    name : {"mm", "paper"}
        ``paper``: per group in the model's normalised coordinates; ``mm``: per group in
        millimetres.
    threshold : float
        BUAN's adjacency threshold (0.05 normalised units for ``paper``; DIPY's 6 mm default
        for ``mm``, 5 mm is more sensitive).
    clust_thr : tuple of float
        QuickBundlesX thresholds of the centroids; ``(0,)`` keeps every streamline.
    """

    name: str = "mm"
    threshold: float = 6.0
    clust_thr: tuple[float, ...] = (0.0,)

    def __post_init__(self):
        if self.name not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.name!r}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold!r}")
        if not self.clust_thr or any(value < 0 for value in self.clust_thr):
            raise ValueError(f"clust_thr must be one or more values >= 0, got {self.clust_thr!r}")

    @property
    def units(self) -> str:
        return "normalised" if self.name == "paper" else "mm"


def protocol(name: str = "mm", *, threshold: float | None = None, clust_thr: Sequence[float] | None = None) -> Protocol:
    """A BUAN protocol: ``"paper"`` (exactly the published one unless overridden) or ``"mm"``.

    Parameters
    ----------
    name : {"mm", "paper"}
    threshold : float, optional
        Default 0.05 (paper) or 6.0 mm.
    clust_thr : sequence of float, optional
        Default ``(0,)``.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    default = 0.05 if name == "paper" else 6.0
    return Protocol(
        name,
        float(default if threshold is None else threshold),
        tuple(float(value) for value in (clust_thr if clust_thr is not None else (0.0,))),
    )


def group_rng(seed: int, key: int) -> np.random.Generator:
    """The random generator of one group: the same whatever the scheduling."""
    return np.random.default_rng([int(seed), int(key)])


def buan_scores_dipy(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    *,
    threshold: float,
    clust_thr: Sequence[float] = (0.0,),
    seed: int = 0,
    keys: Sequence[int] | None = None,
) -> np.ndarray:
    """BUAN of each group by a plain sequential loop of DIPY's ``bundle_shape_similarity``.

    Parameters
    ----------
    originals, reconstructions : sequence of ndarray, shape (n_g, P, 3)
        The streamlines of each group (e.g. its masked rows) and their reconstructions.
    threshold : float
    clust_thr : sequence of float, optional
    seed : int, optional
    keys : sequence of int, optional
        Each group's key of :func:`group_rng` (default: its position).

    Returns
    -------
    ndarray, shape (G,), float64
    """
    from dipy.segment.bundles import bundle_shape_similarity

    keys = range(len(originals)) if keys is None else keys
    return np.array([
        bundle_shape_similarity(
            list(original), list(reconstruction), group_rng(seed, key),
            clust_thr=list(clust_thr), threshold=threshold,
        )
        for original, reconstruction, key in zip(originals, reconstructions, keys)
    ], dtype=np.float64)


def _resample(streamlines: list[np.ndarray]) -> list[np.ndarray]:
    from dipy.tracking.streamline import set_number_of_points

    return set_number_of_points(streamlines, nb_points=_BUAN_POINTS) if streamlines else []


def _centroids(groups: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What QuickBundlesX with threshold 0 and ``ba_analysis`` make of each group, up to the
    order and orientation of the rows: the QuickBundlesX features (resampled to 20 points,
    float32) and the centroids BUAN compares (resampled once more), ``(n_g, 20, 3)`` each."""
    flat = [row for rows in groups for row in rows]
    once = np.asarray(_resample(flat), dtype=np.float32).reshape(-1, _BUAN_POINTS, 3)  # QBX features
    twice = np.asarray(_resample(list(once)), dtype=np.float32).reshape(-1, _BUAN_POINTS, 3)  # ba_analysis
    bounds = np.cumsum([0] + [len(rows) for rows in groups])
    spans = list(zip(bounds[:-1], bounds[1:]))
    return [once[start:stop] for start, stop in spans], [twice[start:stop] for start, stop in spans]


def _has_duplicates(streamlines: np.ndarray) -> bool:
    """Whether two rows of ``(n, 20, 3)`` float32 are equal, directly or one reversed."""
    seen = set()
    for row in np.asarray(streamlines, dtype=np.float32):
        keys = {row.tobytes(), np.ascontiguousarray(row[::-1]).tobytes()}
        if seen & keys:
            return True
        seen |= keys
    return False


def _fast_buan(features: tuple[np.ndarray, np.ndarray], first: np.ndarray, second: np.ndarray, threshold: float) -> float | None:
    """BUAN of one group from its centroids, or None where only DIPY's own run is certain."""
    from dipy.tracking.distances import bundles_distances_mdf

    if len(first) == 0 or len(second) == 0:
        return 0.0
    if _has_duplicates(features[0]) or _has_duplicates(features[1]):  # QuickBundlesX would merge them
        return None
    distances = bundles_distances_mdf(list(first), list(second))  # (n1, n2)
    row_minimum, column_minimum = distances.min(axis=1), distances.min(axis=0)
    margin = _MARGIN * (threshold + max(float(np.abs(first).max()), float(np.abs(second).max())))
    if (np.abs(row_minimum - threshold) <= margin).any() or (np.abs(column_minimum - threshold) <= margin).any():
        return None
    # exactly dipy.segment.bundles.bundle_adjacency's arithmetic
    adjacent_first = int((row_minimum < threshold).sum()) / float(len(first))
    adjacent_second = int((column_minimum < threshold).sum()) / float(len(second))
    return 0.5 * (adjacent_first + adjacent_second)


def _buan_chunk(originals, reconstructions, keys, threshold, clust_thr, seed) -> tuple[np.ndarray, int]:
    """BUAN of a chunk of groups; also how many went to DIPY itself."""
    clust_thr = tuple(float(value) for value in clust_thr)
    if clust_thr != (0.0,):
        return buan_scores_dipy(originals, reconstructions, threshold=threshold, clust_thr=clust_thr, seed=seed, keys=keys), len(keys)
    (features_first, firsts), (features_second, seconds) = _centroids(originals), _centroids(reconstructions)
    scores = np.empty(len(keys))
    by_dipy = 0
    for index, key in enumerate(keys):
        value = _fast_buan((features_first[index], features_second[index]), firsts[index], seconds[index], threshold)
        if value is None:
            by_dipy += 1
            value = buan_scores_dipy(
                [originals[index]], [reconstructions[index]], threshold=threshold, clust_thr=clust_thr, seed=seed, keys=[key]
            )[0]
        scores[index] = value
    return scores, by_dipy


def buan_scores(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    *,
    threshold: float,
    clust_thr: Sequence[float] = (0.0,),
    seed: int = 0,
    keys: Sequence[int] | None = None,
    workers: int | None = None,
    progress: bool = False,
    return_fallbacks: bool = False,
):
    """BUAN of each group, identical to :func:`buan_scores_dipy`, batched and in parallel.

    Parameters
    ----------
    originals, reconstructions : sequence of ndarray, shape (n_g, P, 3)
        Each group's streamlines and their reconstructions.
    threshold : float
        BUAN's adjacency threshold, in the coordinates' units.
    clust_thr : sequence of float, optional
        ``(0,)`` takes the batched exact path (see the module docstring); other values run
        DIPY per group.
    seed : int, optional
        Seed of each group's :func:`group_rng`.
    keys : sequence of int, optional
        Each group's generator key (default: its position).
    workers : int, optional
        Processes; default all cores for large inputs, 1 for small ones (a pool costs
        more than it saves on a few hundred groups of the batched path).
    progress : bool, optional
        Show a progress bar.
    return_fallbacks : bool, optional
        Also return how many groups DIPY scored itself.

    Returns
    -------
    ndarray, shape (G,), float64
        (and the fallback count if asked for).
    """
    count = len(originals)
    if len(reconstructions) != count:
        raise ValueError(f"{count} original groups for {len(reconstructions)} reconstructed ones")
    keys = list(range(count)) if keys is None else [int(key) for key in keys]
    fast = tuple(float(value) for value in clust_thr) == (0.0,)
    if workers is None:
        cores = os.cpu_count() or 1
        workers = cores if (not fast or count >= 2048) else 1
    workers = max(1, min(int(workers), count or 1))
    chunk = max(1, min(256 if fast else 16, -(-count // (workers * 4))))
    starts = list(range(0, count, chunk))
    arguments = [
        (list(originals[start:start + chunk]), list(reconstructions[start:start + chunk]), keys[start:start + chunk],
         float(threshold), tuple(clust_thr), int(seed))
        for start in starts
    ]
    bar = tqdm(total=count, desc="BUAN", unit="group", leave=False, disable=not progress)
    results = []
    if workers == 1:
        for argument in arguments:
            results.append(_buan_chunk(*argument))
            bar.update(len(argument[2]))
    else:
        import multiprocessing

        context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_buan_chunk, *argument) for argument in arguments]
            for future, argument in zip(futures, arguments):
                results.append(future.result())
                bar.update(len(argument[2]))
    bar.close()
    scores = np.concatenate([scores for scores, _ in results]) if results else np.empty(0)
    if return_fallbacks:
        return scores, sum(by_dipy for _, by_dipy in results)
    return scores

