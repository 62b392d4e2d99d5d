"""Scores of reconstructed groups (BUAN, MDF, MSE, code perplexity and usage) and their
per-bundle table.

:func:`score_groups` scores every group of a reconstruction against the original groups
(BUAN by :func:`tractvq.buan.buan_scores`, MDF in millimetres by
:func:`tractvq.metrics.pairwise_mdf`); :func:`summarize` turns the per-group scores of one or
more models into an :class:`EvaluationTable` of per-bundle mean ± std, written as text, CSV or
JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tractvq.buan import Protocol, buan_scores
from tractvq.bundles import GroupedBundles
from tractvq.metrics import pairwise_mdf
from tractvq.outputs import atomic_output

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "EvaluationTable",
    "GroupScores",
    "code_statistics",
    "score_groups",
    "summarize",
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
        Groups whose BUAN DIPY computed itself (see :func:`tractvq.buan.buan_scores`).
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
        See :func:`tractvq.buan.buan_scores`.
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

