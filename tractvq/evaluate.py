"""Scores of reconstructed bundles: BUAN, MDF, MSE, code perplexity and usage.

BUAN (bundle analytics shape similarity; Chandio et al., "Bundle analytics, a computational
framework for investigating the shapes and profiles of brain pathways across populations",
Sci. Rep. 2020) is DIPY's :func:`dipy.segment.bundles.bundle_shape_similarity`. The published
VQ-Diff table scores every 64-streamline group of the validation split in the model's
normalised coordinates with ``clust_thr=[0]`` and ``threshold=0.05``: :func:`protocol`
``"paper"``. That threshold is relative to the normalisation: with the published global
min-max it is 0.05 of half the data's extent, with tractvq's per-group normalisation it is
0.05 of each group's own scale, so only the ``"mm"`` protocol (DIPY's 6 mm by default)
compares models trained with different preprocessing. BUAN saturates (a 3 mm per-point noise
still scores 1.0 at 6 mm), so tables always show the MDF next to it.

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

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tractvq.bundles import GroupedBundles
from tractvq.metrics import pairwise_mdf
from tractvq.outputs import atomic_output

__all__ = [
    "METRICS",
    "DEFAULT_METRICS",
    "PROTOCOLS",
    "Protocol",
    "protocol",
    "group_rng",
    "buan_scores",
    "buan_scores_dipy",
    "code_statistics",
    "model_label",
    "GroupScores",
    "score_groups",
    "EvaluationTable",
    "summarize",
    "run_model",
    "evaluate_models",
    "evaluate_reconstruction",
    "regroup_like",
]

#: Metrics ``--metric`` takes.
METRICS = ("buan", "mdf", "mse", "perplexity", "usage")
#: What a plain ``tractvq evaluate`` reports.
DEFAULT_METRICS = ("buan", "mdf")
#: Table columns of each metric.
_COLUMNS = {
    "buan": ("buan",),
    "mdf": ("mdf_mean", "mdf_max"),
    "mse": ("mse",),
    "perplexity": ("perplexity",),
    "usage": ("usage",),
}
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


# ------------------------------------------------------------------------------------ BUAN
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


# ------------------------------------------------------------------------- other metrics
def code_statistics(indices: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Perplexity (exp of the entropy of the code histogram) and usage (fraction of the
    codebook used) of a set of code indices."""
    _, counts = np.unique(np.asarray(indices, dtype=np.int64).ravel(), return_counts=True)  # codes seen only:
    total = counts.sum()  # an FSQ codebook can have 2**36 codes
    if total == 0:
        return {"perplexity": math.nan, "usage": math.nan}
    probabilities = counts / total
    return {
        "perplexity": float(np.exp(-(probabilities * np.log(probabilities)).sum())),
        "usage": float(len(counts) / codebook_size),
    }


@dataclass
class GroupScores:
    """Per-group scores of one model (or one reconstruction) on grouped bundles.

    Attributes
    ----------
    bundle_names : list of str
        Name of each group's bundle.
    values : dict of str to ndarray (G,)
        Per-group columns (``buan``, ``mdf_mean``, ``mdf_max``, ``mse``).
    codes : dict of str to dict
        Per bundle name (and ``"all"``): ``perplexity`` and ``usage``; empty without codes.
    fallbacks : int
        Groups whose BUAN DIPY computed itself (see :func:`buan_scores`).
    """

    bundle_names: list[str]
    values: dict[str, np.ndarray]
    codes: dict[str, dict[str, float]] = field(default_factory=dict)
    fallbacks: int = 0


def _group_points(groups: GroupedBundles, data: np.ndarray, units: str) -> np.ndarray:
    """Groups ``(G, S, P, 3)``: normalised (float32 as the model sees them) or in mm."""
    if units == "mm":
        return groups.denormalize(data)
    return np.ascontiguousarray(np.asarray(data).transpose(0, 2, 3, 1))


def score_groups(
    groups: GroupedBundles,
    reconstruction: np.ndarray,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    indices: np.ndarray | None = None,
    codebook_size: int | None = None,
    progress: bool = False,
) -> GroupScores:
    """Score the reconstruction of every group against the group's real streamlines.

    Only the masked rows count (the copies that complete a bundle's last group do not).

    Parameters
    ----------
    groups : GroupedBundles
        The original groups.
    reconstruction : ndarray, shape (G, 3, S, P)
        Normalised like ``groups.data``.
    metrics : sequence of str, optional
        Of :data:`METRICS`.
    protocol : Protocol, optional
        BUAN's; default ``protocol("mm")``.
    seed : int, optional
        BUAN's generator seed; group ``g`` uses ``group_rng(seed, g)``.
    workers : int, optional
        See :func:`buan_scores`.
    indices : ndarray, shape (G, h, w), optional
        The model's codes, for ``perplexity`` and ``usage`` (NaN without them).
    codebook_size : int, optional
        Needed with ``indices``.
    progress : bool, optional

    Returns
    -------
    GroupScores
    """
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    protocol = protocol or Protocol()
    reconstruction = np.asarray(reconstruction)
    if reconstruction.shape != groups.data.shape:
        raise ValueError(f"expected a reconstruction of shape {groups.data.shape}, got {reconstruction.shape}")
    names = [groups.sources[index].name for index in groups.bundle_index]
    values: dict[str, np.ndarray] = {}
    mask = groups.mask
    if "buan" in metrics:
        original = _group_points(groups, groups.data, protocol.units)
        decoded = _group_points(groups, reconstruction, protocol.units)
        scores, fallbacks = buan_scores(
            [original[g][mask[g]] for g in range(len(groups))],
            [decoded[g][mask[g]] for g in range(len(groups))],
            threshold=protocol.threshold, clust_thr=protocol.clust_thr, seed=seed,
            workers=workers, progress=progress, return_fallbacks=True,
        )
        values["buan"] = scores
    else:
        fallbacks = 0
    if "mdf" in metrics:
        distances = pairwise_mdf(groups.denormalize(), groups.denormalize(reconstruction))  # (G, S) mm
        counts = mask.sum(axis=1)
        values["mdf_mean"] = np.where(mask, distances, 0.0).sum(axis=1) / np.maximum(counts, 1)
        values["mdf_max"] = np.where(mask, distances, -np.inf).max(axis=1)
    if "mse" in metrics:
        squared = ((reconstruction.astype(np.float64) - groups.data) ** 2).mean(axis=(1, 3))  # (G, S)
        values["mse"] = np.where(mask, squared, 0.0).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    codes: dict[str, dict[str, float]] = {}
    if indices is not None and ({"perplexity", "usage"} & set(metrics)):
        if codebook_size is None:
            raise ValueError("codebook_size is needed with indices")
        indices = np.asarray(indices)
        for name in dict.fromkeys(names):
            codes[name] = code_statistics(indices[np.asarray(names) == name], codebook_size)
        codes["all"] = code_statistics(indices, codebook_size)
    return GroupScores(names, values, codes, fallbacks)


# ---------------------------------------------------------------------------------- tables
def _columns(metrics: Sequence[str]) -> list[str]:
    return [column for metric in METRICS if metric in metrics for column in _COLUMNS[metric]]


@dataclass
class EvaluationTable:
    """Per-bundle mean and standard deviation over groups, for several models.

    Attributes
    ----------
    rows : list of str
        Bundle names, then ``"all"``.
    columns : list of (str, str)
        ``(model, column)`` pairs.
    mean, std : ndarray, shape (R, C)
        NaN where a value does not apply (``n/a``: codes of a continuous model); ``std`` is
        NaN for per-bundle code statistics (one value per bundle).
    count : ndarray, shape (R, C), int
        Groups behind each value.
    settings : dict
        Protocol, threshold, clustering thresholds, seed and anything else worth recording.
    """

    rows: list[str]
    columns: list[tuple[str, str]]
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    settings: dict = field(default_factory=dict)

    def value(self, row: str, model: str, column: str) -> tuple[float, float]:
        """``(mean, std)`` of one cell."""
        index = self.rows.index(row), self.columns.index((model, column))
        return float(self.mean[index]), float(self.std[index])

    def format(self) -> str:
        """The table as aligned text: ``mean ± std`` cells, ``n/a`` where nothing applies."""
        header = ["bundle"] + [f"{model}:{column}" if len({m for m, _ in self.columns}) > 1 else column
                               for model, column in self.columns]
        lines = [header]
        for r, row in enumerate(self.rows):
            cells = [row]
            for c, (_, column) in enumerate(self.columns):
                mean, std = self.mean[r, c], self.std[r, c]
                digits = 5 if column in ("buan", "usage") else 3 if column.startswith("mdf") else 4
                if not np.isfinite(mean):
                    cells.append("n/a")
                elif np.isfinite(std):
                    cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
                else:
                    cells.append(f"{mean:.{digits}f}")
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths)))
                for line in lines]
        text.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(text)

    def records(self) -> list[dict]:
        """One dict per (bundle, model, column): ``mean``, ``std``, ``count`` (None for NaN)."""
        return [
            {"bundle": row, "model": model, "metric": column,
             "mean": _finite(self.mean[r, c]), "std": _finite(self.std[r, c]), "count": int(self.count[r, c])}
            for r, row in enumerate(self.rows) for c, (model, column) in enumerate(self.columns)
        ]

    def save_csv(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write :meth:`records` as CSV, atomically; refuses to replace without ``force``."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["bundle", "model", "metric", "mean", "std", "count"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: ("" if value is None else value) for key, value in record.items()} for record in self.records())
        with atomic_output(path, force=force) as temporary:
            temporary.write_text(buffer.getvalue())
        return Path(path)

    def save_json(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the settings and :meth:`records` as JSON, atomically."""
        text = json.dumps({"settings": self.settings, "results": self.records()}, indent=2) + "\n"
        with atomic_output(path, force=force) as temporary:
            temporary.write_text(text)
        return Path(path)


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize(scores: Mapping[str, GroupScores], metrics: Sequence[str] = DEFAULT_METRICS, *, settings: dict | None = None) -> EvaluationTable:
    """Per-bundle mean ± std over groups (rows bundles, columns models × metrics).

    Parameters
    ----------
    scores : mapping of str to GroupScores
        One entry per model (column group), in display order.
    metrics : sequence of str, optional
    settings : dict, optional
        Recorded with the table.

    Returns
    -------
    EvaluationTable
    """
    rows = list(dict.fromkeys(name for result in scores.values() for name in result.bundle_names)) + ["all"]
    columns = [(model, column) for model in scores for column in _columns(metrics)]
    mean = np.full((len(rows), len(columns)), np.nan)
    std = np.full_like(mean, np.nan)
    count = np.zeros(mean.shape, dtype=np.int64)
    for c, (model, column) in enumerate(columns):
        result = scores[model]
        names = np.asarray(result.bundle_names)
        for r, row in enumerate(rows):
            selected = np.ones(len(names), bool) if row == "all" else names == row
            if column in ("perplexity", "usage"):
                if row in result.codes:
                    mean[r, c] = result.codes[row][column]
                    count[r, c] = int(selected.sum())
                continue
            values = result.values[column][selected]
            if len(values):
                mean[r, c], std[r, c], count[r, c] = values.mean(), values.std(), len(values)
    return EvaluationTable(rows, columns, mean, std, count, dict(settings or {}))


# --------------------------------------------------------------------------- whole runs
def run_model(model, data: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray | None]:
    """Reconstruction ``(G, 3, S, P)`` of normalised groups, and the indices ``(G, h, w)``
    where the bottleneck gives them (None for continuous models)."""
    import torch

    model = model.eval().to(device)
    reconstructions, indices = [], []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(data[start:start + batch_size])).to(device)
            output = model(batch)
            reconstructions.append(output.reconstruction.float().cpu().numpy())
            if output.quantizer_output.indices is not None:
                indices.append(output.quantizer_output.indices.cpu().numpy())
    reconstruction = np.concatenate(reconstructions) if reconstructions else np.empty((0, *data.shape[1:]), np.float32)
    return reconstruction, (np.concatenate(indices) if indices else None)


def model_label(name, labels: list[str]) -> str:
    """A unique column label: a file's stem (its folder's name for a run's ``model.pt``), a
    shipped name, or ``model`` for an object."""
    if isinstance(name, (str, os.PathLike)):
        path = Path(name)
        label = os.fspath(name) if not path.suffix else path.parent.name if path.stem == "model" and path.parent.name else path.stem
    else:
        label = "default" if name is None else "model"
    unique, suffix = label, 2
    while unique in labels:
        unique, suffix = f"{label}-{suffix}", suffix + 1
    return unique


def _settings(protocol: Protocol, seed: int, metrics: Sequence[str], **extra) -> dict:
    return {"protocol": protocol.name, "units": protocol.units, "threshold": protocol.threshold,
            "clust_thr": list(protocol.clust_thr), "seed": seed, "metrics": list(metrics), **extra}


def evaluate_models(
    inputs: Sequence[str | os.PathLike],
    models: Sequence,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    reference: str | os.PathLike | None = None,
    coordinate_range: tuple[float, float] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[EvaluationTable, dict[str, GroupScores]]:
    """Encode, decode and score tractograms with several models side by side.

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Tractograms, subject folders or TractoInferno roots
        (:func:`tractvq.io.find_tractograms`).
    models : sequence
        Model names, files or objects (:func:`tractvq.encoding.resolve_model`); each
        groups the input with its own preprocessing.
    metrics, protocol, seed, workers
        See :func:`score_groups`.
    reference, coordinate_range
        See :func:`tractvq.encoding.group_for_model`.
    batch_size, device, progress

    Returns
    -------
    table : EvaluationTable
    scores : dict of str to GroupScores
        Per model label.
    """
    from tractvq import io as tractvq_io
    from tractvq.encoding import group_for_model, resolve_model

    protocol = protocol or Protocol()
    records = tractvq_io.find_tractograms(*inputs)
    scores: dict[str, GroupScores] = {}
    for name in models or [None]:
        model, source = resolve_model(name)
        label = model_label(source or name, list(scores))
        groups = group_for_model(records, model, reference=reference, coordinate_range=coordinate_range, progress=progress)
        reconstruction, indices = run_model(model, groups.data, batch_size=batch_size, device=device)
        scores[label] = score_groups(
            groups, reconstruction, metrics=metrics, protocol=protocol, seed=seed, workers=workers,
            indices=indices, codebook_size=getattr(model.quantizer, "codebook_size", None), progress=progress,
        )
    return summarize(scores, metrics, settings=_settings(protocol, seed, metrics, inputs=[os.fspath(i) for i in inputs])), scores


def regroup_like(groups: GroupedBundles, streamlines: Sequence[np.ndarray]) -> np.ndarray:
    """Other streamlines of the same bundles put into ``groups``' layout.

    Parameters
    ----------
    groups : GroupedBundles
    streamlines : sequence of ndarray, shape (N_b, P, 3)
        One array per source of ``groups``, in millimetres, in the source's order (as
        :meth:`GroupedBundles.to_streamlines` returns them).

    Returns
    -------
    ndarray, shape (G, 3, S, P), float32
        Same rows, flips and normalisation as ``groups.data``.
    """
    if len(streamlines) != len(groups.sources):
        raise ValueError(f"{len(streamlines)} bundles for {len(groups.sources)} sources")
    points = np.empty(groups.data.shape[:1] + groups.data.shape[2:] + (3,))  # (G, S, P, 3)
    for index, bundle in enumerate(streamlines):
        selected = groups.bundle_index == index
        points[selected] = np.asarray(bundle, dtype=np.float64)[groups.streamline_index[selected]]
    points = np.where(groups.flipped[..., None, None], points[:, :, ::-1], points)
    normalised = (points - groups.offset[:, None, None, :]) / groups.scale[:, None, None, None]
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)).astype(np.float32)


def _read_streamlines(records, reference, n_points: int) -> list[np.ndarray]:
    from tractvq import io as tractvq_io
    from tractvq.bundles import resample

    streamlines = []
    for record in records:
        tractogram = tractvq_io.read_record(record, reference)
        tractogram.to_rasmm()
        tractogram.to_center()
        streamlines.append(resample(tractogram, n_points, source=record.path).astype(np.float64))
    return streamlines


def evaluate_reconstruction(
    original: Sequence[str | os.PathLike] | str | os.PathLike,
    reconstruction: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    settings=None,
    model=None,
    reference: str | os.PathLike | None = None,
    label: str = "reconstruction",
    progress: bool = False,
) -> tuple[EvaluationTable, dict[str, GroupScores]]:
    """Score reconstructed tractograms (or a codes file) against the originals.

    ``original`` is grouped (default: groups of 64 consecutive streamlines in the given
    order, no re-orientation or re-ordering, one min-max normalisation of the originals to
    [-1, 1], the published preprocessing) and the same rows are taken from
    ``reconstruction``: streamline ``i`` of a reconstructed bundle must be the reconstruction
    of streamline ``i`` of the original.

    Parameters
    ----------
    original : path or sequence of paths
        Tractograms, folders (:func:`tractvq.io.find_tractograms`).
    reconstruction : path or sequence of paths
        The same bundles reconstructed (matched by subject and bundle name when several), or
        one ``.npz`` codes file, decoded with ``model`` or the model it names.
    metrics, protocol, seed, workers
        See :func:`score_groups` (``perplexity`` and ``usage`` need a codes file of a
        discrete model).
    settings : GroupingSettings, optional
        How to group the originals.
    model : optional
        Model of a codes file (default: the one the file names).
    reference : optional
        Spatial reference for formats without one.
    label : str, optional
        Column label.
    progress : bool, optional

    Returns
    -------
    table : EvaluationTable
    scores : dict of str to GroupScores

    Raises
    ------
    TractogramError
        If the bundles do not match or their streamline counts differ (naming both files).
    """
    from tractvq import io as tractvq_io
    from tractvq.bundles import PAPER_SETTINGS, GroupedBundles, group_streamlines, BundleSource, coordinate_range
    from dataclasses import replace
    from tractvq.errors import TractogramError

    protocol = protocol or Protocol()
    originals = [original] if isinstance(original, (str, os.PathLike)) else list(original)
    recons = [reconstruction] if isinstance(reconstruction, (str, os.PathLike)) else list(reconstruction)
    records = tractvq_io.find_tractograms(*originals)
    settings = settings or PAPER_SETTINGS
    indices = codebook_size = None
    codes_file = len(recons) == 1 and Path(recons[0]).suffix.lower() == ".npz"
    if codes_file:
        from tractvq.codes import Codes
        from tractvq.encoding import _model_for_codes, decode_codes

        codes = Codes.load(recons[0])
        decoder = _model_for_codes(codes, model)
        decoded = codes.layout.to_streamlines(decode_codes(decoder, codes))
        recon_names = [(source.subject, source.name) for source in codes.layout.sources]
        recon_paths = [recons[0]] * len(recon_names)
        recon_streamlines = dict(zip(recon_names, decoded))
        settings = replace(settings, n_points=codes.layout.settings.n_points)
        codebook_size = getattr(decoder.quantizer, "codebook_size", None)
    else:
        recon_records = tractvq_io.find_tractograms(*recons)
        if len(recon_records) == len(records) == 1:
            recon_names = [(records[0].subject, records[0].bundle)]
        else:
            recon_names = [(record.subject, record.bundle) for record in recon_records]
        recon_paths = [record.path for record in recon_records]
        recon_streamlines = dict(zip(recon_names, _read_streamlines(recon_records, reference, settings.n_points)))
    recon_path = dict(zip(recon_names, recon_paths))
    points = _read_streamlines(records, reference, settings.n_points)
    if settings.normalization == "global" and settings.minimum is None:
        ranges = [coordinate_range(bundle) for bundle in points]
        settings = replace(settings, minimum=min(r[0] for r in ranges), maximum=max(r[1] for r in ranges))
    parts, matched = [], []
    for record, bundle in zip(records, points):
        key = (record.subject, record.bundle)
        if key not in recon_streamlines:
            raise TractogramError(record.path, f"no reconstruction of bundle {record.bundle!r} (subject {record.subject!r}) in {', '.join(map(os.fspath, recons))}")
        other = recon_streamlines[key]
        if len(other) != len(bundle):
            raise TractogramError(
                record.path,
                f"has {len(bundle)} streamlines but its reconstruction {os.fspath(recon_path[key])} has {len(other)}:"
                " both must hold the same streamlines in the same order",
            )
        tractogram_source = BundleSource(record.subject, record.bundle, os.fspath(record.path), len(bundle), space_attributes=None)
        parts.append(group_streamlines(bundle.astype(np.float32), settings, source=tractogram_source))
        matched.append(other)
    groups = GroupedBundles.concatenate(parts)
    recon_data = regroup_like(groups, matched)
    if codes_file and codes.indices is not None and ({"perplexity", "usage"} & set(metrics)):
        indices = codes.indices
        # code statistics are per bundle of the codes' own layout
    result = score_groups(groups, recon_data, metrics=metrics, protocol=protocol, seed=seed, workers=workers, progress=progress)
    if indices is not None:
        names = np.asarray([codes.layout.sources[i].name for i in codes.layout.bundle_index])
        result.codes = {name: code_statistics(indices[names == name], codebook_size) for name in dict.fromkeys(names)}
        result.codes["all"] = code_statistics(indices, codebook_size)
    table = summarize({label: result}, metrics, settings=_settings(
        protocol, seed, metrics, original=[os.fspath(p) for p in originals], reconstruction=[os.fspath(p) for p in recons]))
    return table, {label: result}
