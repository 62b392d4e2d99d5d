"""Write the rows of a quantizer benchmark as CSV, a Markdown table and a bar plot.

:func:`write_results` writes all of them into one new folder, atomically
(:func:`tractvq.outputs.atomic_output`): ``results.csv``, ``results.md``, ``results.png`` and,
when settings are given, ``settings.json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tractvq.outputs import atomic_output

__all__ = [
    "RESULT_FILES",
    "SCORE_COLUMNS",
    "format_markdown",
    "plot_results",
    "write_csv",
    "write_result_files",
    "write_results",
]

RESULT_FILES = ("results.csv", "results.md", "results.png")
#: (row key, Markdown header, format) of the scores every bundle-code table shows: bytes,
#: BUAN in both protocols, MDF, MSE and code statistics.
SCORE_COLUMNS = (
    ("bytes_per_bundle", "Bytes/bundle", "{:,.0f}"),
    ("buan_paper", "BUAN (paper)", "{:.3f}"),
    ("buan_mm", "BUAN (mm)", "{:.3f}"),
    ("mdf_mm", "MDF (mm)", "{:.2f}"),
    ("mdf_max_mm", "max MDF (mm)", "{:.2f}"),
    ("mse", "MSE", "{:.5f}"),
    ("perplexity", "Perplexity", "{:.1f}"),
    ("usage", "Usage", "{:.3f}"),
)

# (row key, Markdown header, format of a value)
_MARKDOWN = (
    ("quantizer", "Quantizer", "{}"),
    ("discrete", "Kind", None),
    ("codebook_size", "K", "{}"),
    ("mse", "MSE", "{:.5f}"),
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("perplexity", "Perplexity", "{:.1f}"),
    ("usage", "Usage", "{:.3f}"),
    ("ms_per_step", "ms/step", "{:.2f}"),
    ("train_mse", "Train MSE", "{:.5f}"),
)


def format_markdown(rows: Sequence[Mapping], columns: Sequence[tuple] = _MARKDOWN) -> str:
    """A Markdown table of benchmark rows (missing or NaN values show as ``n/a``).

    Parameters
    ----------
    rows : sequence of mapping
        Rows as returned by :func:`tractvq.bench.digits.run_benchmark`.
    columns : sequence of tuple, optional
        ``(row key, header, format)`` of each column; format None for the ``discrete`` key
        (shown as the kind). Default: the image benchmark's columns.

    Returns
    -------
    str
        The table, one line per row after the header and separator, with a final newline.
    """
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" if key in ("quantizer", "label", "discrete") else "---:" for key, _, _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, template in columns:
            value = row.get(key)
            if key == "discrete":
                cells.append("discrete" if value else "continuous")
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("n/a")
            else:
                cells.append(template.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike) -> None:
    """Write the rows to a CSV file, one column per key of the first row.

    None is written as an empty cell, NaN as ``nan``, floats at full precision.
    """
    rows = list(rows)
    columns = list(rows[0]) if rows else []
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in columns})


def plot_results(rows: Sequence[Mapping], path: str | os.PathLike, *, title: str | None = None) -> None:
    """Bar plot of the test PSNR and code perplexity of each quantizer, written to ``path``.

    Continuous bottlenecks have no perplexity bar (marked "continuous"). Uses matplotlib's
    object interface (no pyplot state), so it works without a display.
    """
    from matplotlib.figure import Figure

    names = [row["quantizer"] for row in rows]
    positions = range(len(rows))
    figure = Figure(figsize=(10, 0.45 * len(rows) + 1.6), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    left.barh(positions, [row["psnr"] for row in rows], color="tab:blue")
    left.set_xlabel("test PSNR (dB), higher is better")
    left.set_yticks(list(positions), names)
    left.invert_yaxis()
    perplexities = [_number(row.get("perplexity")) for row in rows]
    right.barh(positions, [0 if math.isnan(value) else value for value in perplexities], color="tab:orange")
    for position, value in zip(positions, perplexities):
        if math.isnan(value):
            right.text(0, position, " continuous", va="center", color="grey")
    sizes = {row.get("codebook_size") for row in rows if row.get("codebook_size")}
    label = "test code perplexity" + (f" (of K = {sizes.pop()})" if len(sizes) == 1 else "")
    right.set_xlabel(label)
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=120)


def write_result_files(
    rows: Sequence[Mapping],
    folder: str | os.PathLike,
    *,
    columns: Sequence[tuple] = _MARKDOWN,
    plot: Callable[..., None] = plot_results,
    settings: Mapping | None = None,
    title: str | None = None,
) -> None:
    """Write ``results.csv``, ``results.md``, ``results.png`` (and ``settings.json``) into an
    existing folder, each file atomically, replacing older ones.

    Parameters
    ----------
    rows : sequence of mapping
    folder : str or os.PathLike
    columns : sequence of tuple, optional
        Columns of the Markdown table (see :func:`format_markdown`).
    plot : callable, optional
        ``plot(rows, path, title=title)`` writes the PNG.
    settings : mapping, optional
        The benchmark's settings (steps, seed, ...).
    title : str, optional
        Title of the plot.
    """
    folder = Path(folder)
    writers = {
        "results.csv": lambda path: write_csv(rows, path),
        "results.md": lambda path: path.write_text(format_markdown(rows, columns)),
        "results.png": lambda path: plot(rows, path, title=title),
    }
    if settings is not None:
        writers["settings.json"] = lambda path: path.write_text(json.dumps(dict(settings), indent=2) + "\n")
    for name, write in writers.items():
        with atomic_output(folder / name, force=True) as temporary:
            write(temporary)


def write_results(
    rows: Sequence[Mapping],
    output: str | os.PathLike,
    *,
    settings: Mapping | None = None,
    title: str | None = None,
    force: bool = False,
) -> Path:
    """Write the benchmark rows into a new folder: CSV, Markdown, PNG (and settings JSON).

    Parameters
    ----------
    rows : sequence of mapping
        Rows as returned by :func:`tractvq.bench.digits.run_benchmark`.
    output : str or os.PathLike
        The folder to create.
    settings : mapping, optional
        The benchmark's settings (steps, seed, ...), written to ``settings.json``.
    title : str, optional
        Title of the plot.
    force : bool, optional
        Replace an existing ``output``.

    Returns
    -------
    pathlib.Path
        ``output``.

    Raises
    ------
    tractvq.errors.OutputError
        If ``output`` exists and ``force`` is false, or its parent folder is missing.
    """
    with atomic_output(output, force=force, directory=True, owned=(*RESULT_FILES, "settings.json")) as folder:
        write_result_files(rows, folder, settings=settings, title=title)
    return Path(output)


def _number(value) -> float:
    return math.nan if value is None else float(value)
