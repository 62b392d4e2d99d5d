"""What is in a tractogram: counts, lengths, extent, space and problems (``tractvq info``)."""

from __future__ import annotations

import os

import numpy as np
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.tracking.streamline import length

from tractvq.io import ARRAY_EXTENSION, ARRAY_MM_PER_UNIT, TractogramRecord, read_record, trx_groups

__all__ = ["format_summaries", "summarize"]


def _spread(values: np.ndarray) -> list[float] | None:
    """``[min, median, max]`` of the finite values, or None if there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return [float(finite.min()), float(np.median(finite)), float(finite.max())]


def _out_of_box_count(tractogram: StatefulTractogram) -> int:
    """Streamlines with a point outside the reference volume, by DIPY's own test."""
    copy = StatefulTractogram.from_sft(tractogram.streamlines, tractogram)
    removed, _ = copy.remove_invalid_streamlines()
    return len(removed)


def _overlap(record: TractogramRecord) -> int:
    """How many streamlines of a .trx bundle are also in another group of its file."""
    if record.indices is None:
        return 0
    _, groups = trx_groups(record.path)
    others = [indices for name, indices in groups.items() if name != record.group]
    return int(np.isin(record.indices, np.concatenate(others)).sum()) if others else 0


def summarize(
    record: TractogramRecord, reference: str | os.PathLike | None = None
) -> dict:
    """Describe one bundle: a tractogram file or a group of a .trx file.

    Parameters
    ----------
    record : TractogramRecord
        The bundle, as :func:`tractvq.io.find_tractograms` returns it.
    reference : str or os.PathLike, optional
        Spatial reference for formats without one (see :func:`tractvq.io.load`).

    Returns
    -------
    dict
        JSON-ready: ``path``, ``subject``, ``bundle``, ``group`` (the TRX group, or None),
        ``format``, ``streamlines``,
        ``points`` and ``length_mm`` (each ``[min, median, max]`` or None), ``bbox_mm``
        (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of the finite points, or None),
        ``space`` (voxel order, dimensions, voxel sizes, affine, and for published arrays
        the assumed scale), the problem counts ``out_of_box``, ``non_finite`` and
        ``degenerate`` (fewer than two points), and ``overlap``: streamlines of a TRX
        group that are also in another group of the file (each group is a bundle of its
        own, so they are encoded once per group).

    Raises
    ------
    TractogramError
        If the file cannot be read (see :func:`tractvq.io.load`).
    """
    tractogram = read_record(record, reference, check_coordinates=False)  # counted below, not refused
    streamlines = tractogram.streamlines
    points_per_streamline = np.asarray(streamlines._lengths, dtype=float)
    points = np.asarray(streamlines.get_data(), dtype=np.float64).reshape(-1, 3)
    finite_points = np.isfinite(points).all(axis=1)
    non_finite = 0
    if len(streamlines):
        starts = np.concatenate(([0], np.cumsum(points_per_streamline[:-1]).astype(int)))
        non_finite = int(np.sum(np.logical_and.reduceat(finite_points, starts) == 0))
    affine, dimensions, voxel_sizes, voxel_order = tractogram.space_attributes
    space = {
        "voxel_order": str(voxel_order),
        "dimensions": [int(value) for value in dimensions],
        "voxel_sizes": [float(value) for value in voxel_sizes],
        "affine": np.asarray(affine).tolist(),
    }
    if record.path.suffix.lower() == ARRAY_EXTENSION:
        space["assumed_mm_per_unit"] = ARRAY_MM_PER_UNIT
    return {
        "path": os.fspath(record.path),
        "subject": record.subject,
        "bundle": record.bundle,
        "group": record.group,
        "format": record.path.suffix.lower().lstrip("."),
        "streamlines": len(streamlines),
        "points": _spread(points_per_streamline),
        "length_mm": _spread(np.asarray(length(streamlines), dtype=float)) if len(streamlines) else None,
        "bbox_mm": (
            [points[finite_points].min(axis=0).tolist(), points[finite_points].max(axis=0).tolist()]
            if finite_points.any()
            else None
        ),
        "space": space,
        "out_of_box": _out_of_box_count(tractogram) if len(streamlines) else 0,
        "non_finite": non_finite,
        "degenerate": int(np.sum(points_per_streamline < 2)),
        "overlap": _overlap(record),
    }


def _triple(values: list[float] | None, digits: int) -> str:
    return "-" if values is None else "/".join(f"{value:.{digits}f}" for value in values)


def format_summaries(summaries: list[dict]) -> str:
    """A plain-text table of :func:`summarize` results, one row per bundle, then the spaces.

    Parameters
    ----------
    summaries : list of dict

    Returns
    -------
    str
    """
    header = (
        "subject",
        "bundle",
        "streamlines",
        "points min/med/max",
        "length mm min/med/max",
        "bbox mm (x, y, z)",
        "out of box",
        "problems",
    )
    rows = [header]
    for summary in summaries:
        bbox = summary["bbox_mm"]
        problems = [
            f"{summary[key]} {label}"
            for key, label in (("non_finite", "non-finite"), ("degenerate", "< 2 points"),
                               ("overlap", "also in another group"))
            if summary[key]
        ]
        rows.append(
            (
                summary["subject"],
                summary["bundle"],
                str(summary["streamlines"]),
                _triple(summary["points"], 0),
                _triple(summary["length_mm"], 1),
                "-"
                if bbox is None
                else ", ".join(f"{low:.0f}..{high:.0f}" for low, high in zip(*bbox)),
                str(summary["out_of_box"]),
                ", ".join(problems) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    spaces = {}
    for summary in summaries:
        space = summary["space"]
        text = (
            f"{space['voxel_order']} {'x'.join(map(str, space['dimensions']))} voxels of "
            f"{'x'.join(f'{size:g}' for size in space['voxel_sizes'])} mm"
        )
        if "assumed_mm_per_unit" in space:
            text += f" (published array, {space['assumed_mm_per_unit']:g} mm per unit assumed)"
        spaces.setdefault(text, set()).add(summary["path"])
    lines.append("")
    for text, paths in spaces.items():
        lines.append(f"space: {text}  [{len(paths)} file(s)]")
    total = sum(summary["streamlines"] for summary in summaries)
    files = len({summary["path"] for summary in summaries})
    groups = f"{len(summaries)} bundle(s), " if files != len(summaries) else ""
    lines.append(f"{files} file(s), {groups}{total} streamlines")
    return "\n".join(lines)
