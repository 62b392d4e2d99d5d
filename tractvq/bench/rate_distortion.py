"""Rate–distortion of bundle codes: BUAN and mean MDF against the bytes that store a bundle.

One point per model, from rows of the streamline benchmark
(:func:`tractvq.bench.streamlines.run_streamline_benchmark`, its ``results.csv``) or of
:func:`tractvq.bench.streamlines.score_model`, with the published VQ-Diff table's models
(Lizarraga et al., arXiv 2311.06212; ``PUBLISHED_POINTS``) marked for comparison.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PUBLISHED_POINTS", "read_rows", "plot_rate_distortion"]

#: The published table's models: (name, bytes per 64-streamline bundle, mean BUAN over the 12
#: bundles of its table). Continuous latents count 4 bytes per number (AE and VQ-Diff:
#: 16 x 16 x 64 numbers; the VAE: 20); VQ and VQ-EMA store 16 x 16 indices of 9 bits. The
#: published BUAN is in its global normalisation (threshold 0.05 of about 100 mm, i.e. 5 mm):
#: compare it with our millimetre protocol at 5 mm. The paper reports no MDF.
PUBLISHED_POINTS = (
    ("AE", 65_536, 0.9999),
    ("VQ-Diff", 65_536, 0.9953),
    ("VQ-VAE", 288, 0.4964),
    ("VQ-VAE-EMA", 288, 0.4328),
    ("VAE", 80, 0.3530),
)

_NUMBERS = ("bytes_per_bundle", "buan_paper", "buan_mm", "mdf_mm")


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a streamline benchmark's ``results.csv`` (every column but ``quantizer`` and
    ``run`` as floats, empty cells as NaN; ``discrete`` as bool).

    Raises
    ------
    tractvq.errors.TractvqError
        If the file is missing or lacks the columns the plot needs.
    """
    from tractvq.errors import TractvqError

    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise TractvqError(path, f"cannot read it ({error.strerror})") from error
    missing = [key for key in ("quantizer", "discrete", *_NUMBERS) if rows and key not in rows[0]]
    if not rows or missing:
        raise TractvqError(path, f"not a streamline benchmark's results.csv (missing {', '.join(missing) or 'rows'})")
    for row in rows:
        row["discrete"] = row["discrete"] == "True"
        for key, value in row.items():
            if key not in ("quantizer", "discrete", "run"):
                row[key] = _number(value)
    return rows


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in ("", None) else math.nan
    except ValueError:
        return math.nan


def plot_rate_distortion(
    rows: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    threshold_mm: float = 5.0,
    published: bool = True,
) -> None:
    """Write the rate–distortion plot of ``rows`` to ``path``.

    Left: BUAN in mm (``buan_mm``, the published protocol's equivalent at 5 mm) against
    bytes per bundle, with the published points (black crosses); right: mean MDF in mm
    against bytes per bundle. Bytes on a log axis; discrete codes blue, continuous latents
    grey; each point labelled with its ``label`` (or ``quantizer``).

    Parameters
    ----------
    rows : sequence of mapping
        With ``bytes_per_bundle``, ``buan_mm``, ``mdf_mm``, ``discrete`` and ``quantizer`` or
        ``label``.
    path : str or os.PathLike
        The PNG to write.
    title : str, optional
    threshold_mm : float, optional
        The BUAN threshold the rows were scored with (axis label).
    published : bool, optional
        Mark :data:`PUBLISHED_POINTS`.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.6), layout="constrained")
    buan_axes, mdf_axes = figure.subplots(1, 2, sharex=True)
    for row in rows:
        colour = "tab:blue" if row["discrete"] else "tab:grey"
        label = row.get("label") or row["quantizer"]
        for axes, key in ((buan_axes, "buan_mm"), (mdf_axes, "mdf_mm")):
            axes.scatter(row["bytes_per_bundle"], row[key], color=colour, zorder=3)
            axes.annotate(label, (row["bytes_per_bundle"], row[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if published:
        for name, size, buan in PUBLISHED_POINTS:
            buan_axes.scatter(size, buan, marker="x", color="black", zorder=3)
            buan_axes.annotate(f"{name} (published)", (size, buan), fontsize=7, xytext=(3, -9), textcoords="offset points")
    buan_axes.axhline(0.99, color="tab:red", linewidth=0.8, linestyle="--")
    buan_axes.set_ylabel(f"BUAN at {threshold_mm:g} mm (clust_thr 0), higher is better")
    mdf_axes.set_ylabel("mean MDF (mm), lower is better")
    for axes in (buan_axes, mdf_axes):
        axes.set_xscale("log")
        axes.set_xlabel("bytes per 64-streamline bundle")
        axes.grid(alpha=0.3, which="both")
    figure.suptitle((title + "\n" if title else "") + "blue: discrete codes, grey: continuous latents, x: published", fontsize=10)
    figure.savefig(path, dpi=120)
