"""Rate–distortion of bundle codes: BUAN and mean MDF against the bytes that store a streamline.

One point per model or baseline codec (:mod:`tractvq.baselines`), scored on the same data by
:func:`score_rate_distortion`, or per row of the streamline benchmark
(:func:`tractvq.bench.streamlines.run_streamline_benchmark`, its ``results.csv``), with the
published VQ-Diff table's models (Lizarraga et al., arXiv 2311.06212; ``PUBLISHED_POINTS``)
marked for comparison, and the frontier (the best distortion at each size) drawn through them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tractvq.bench.report import SCORE_COLUMNS

__all__ = [
    "PUBLISHED_POINTS",
    "RATE_DISTORTION_COLUMNS",
    "plot_rate_distortion",
    "read_rows",
    "score_baseline",
    "score_rate_distortion",
]

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
#: Streamlines of the published bundle: bytes per bundle of rows that lack bytes per streamline
#: (the benchmark's rows, the published points) are per 64 streamlines.
_BUNDLE = 64

#: (row key, Markdown header, format) of the rate–distortion table. Baselines have no
#: published-protocol BUAN, MSE or codes (``n/a``).
RATE_DISTORTION_COLUMNS = (
    ("label", "Codec", "{}"),
    ("kind", "Kind", "{}"),
    ("bytes_per_streamline", "Bytes/streamline", "{:,.2f}"),
    *SCORE_COLUMNS,
)


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
        row["kind"] = _kind(row["discrete"])
        row["bytes_per_streamline"] = row["bytes_per_bundle"] / _BUNDLE
    return rows


def _kind(discrete: bool) -> str:
    return "discrete" if discrete else "continuous"


def score_baseline(baseline, groups, *, originals=None, threshold_mm: float = 5.0, seed: int = 0) -> dict:
    """A baseline codec's row: encode and decode ``groups``, score like a model.

    Parameters
    ----------
    baseline : tractvq.baselines.Baseline
        Fitted if it needs to be.
    groups : GroupedBundles
    originals : optional
        The streamlines before resampling (see :meth:`tractvq.baselines.Baseline.encode`).
    threshold_mm : float, optional
        BUAN threshold (mm protocol, ``clust_thr`` 0).
    seed : int, optional
        BUAN's seed.

    Returns
    -------
    dict
        ``label``, ``kind`` (``"baseline"``), ``bytes_per_streamline`` (what the codec stored
        over the streamlines it stored), ``bytes_per_bundle`` (per group of ``S`` streamlines),
        ``buan_mm``, ``mdf_mm`` and ``mdf_max_mm`` (means over the groups of each group's
        mean and largest MDF, as :func:`tractvq.bench.streamlines.score_model`), ``groups``.
    """
    from tractvq.buan import protocol
    from tractvq.scoring import score_groups

    reconstruction, encoded = baseline.reconstruct(groups, originals)
    scores = score_groups(groups, reconstruction, metrics=("buan", "mdf"),
                          protocol=protocol("mm", threshold=threshold_mm), seed=seed)
    return {
        "label": baseline.name,
        "kind": "baseline",
        "bytes_per_streamline": encoded.bytes_per_streamline,
        "bytes_per_bundle": encoded.bytes_per_streamline * groups.settings.group_size,
        "buan_mm": float(scores.values["buan"].mean()),
        "mdf_mm": float(scores.values["mdf_mean"].mean()),
        "mdf_max_mm": float(scores.values["mdf_max"].mean()),
        "groups": len(groups),
    }


def score_rate_distortion(
    data: Sequence[str | os.PathLike],
    models: Sequence = (),
    baselines: Sequence[str] = (),
    *,
    fit_cache: str | os.PathLike | None = None,
    threshold_mm: float = 5.0,
    seed: int = 0,
    reference: str | os.PathLike | None = None,
) -> list[dict]:
    """Score models and baseline codecs on the same data, one row each.

    Parameters
    ----------
    data : sequence of str or os.PathLike
        One training cache folder (its validation groups are scored, as they are), or
        tractograms, subject folders and TractoInferno roots
        (:func:`tractvq.io.find_tractograms`): each model groups them with its own
        preprocessing, the baselines with the grouping the PCA baselines were fitted on
        (tractvq's default one without them), and ``dipy-compress`` compresses the original streamlines.
    models : sequence, optional
        Model names, files or objects (:func:`tractvq.encoding.resolve_model`).
    baselines : sequence of str or Baseline, optional
        Baseline names (:func:`tractvq.baselines.make_baseline`) or codecs (e.g. a PCA
        fitted once and reused, :func:`tractvq.baselines.load_pca`).
    fit_cache : str or os.PathLike, optional
        The training cache whose ``"train"`` groups the unfitted PCA baselines are fitted
        on; needed with one.
    threshold_mm : float, optional
        BUAN threshold in mm.
    seed : int, optional
        BUAN's seed.
    reference : str or os.PathLike, optional
        Spatial reference for formats without one.

    Returns
    -------
    list of dict
        Models first (:func:`tractvq.bench.streamlines.model_row` with ``label``, ``kind``
        and ``bytes_per_streamline``, the code of one full group over its ``S``
        streamlines), then baselines (:func:`score_baseline`), in the order given.

    Raises
    ------
    ValueError
        If a baseline name is unknown, or a PCA baseline is asked for without ``fit_cache``.
    tractvq.errors.TractvqError
        If a file cannot be read, the cache has no validation groups, or ``fit_cache``
        cannot fit the PCA baselines or was grouped unlike the cache scored.
    """
    from tractvq import io as tractvq_io
    from tractvq.baselines import make_baseline
    from tractvq.bench.streamlines import model_row
    from tractvq.bundles import GroupingSettings
    from tractvq.cache import load_cache
    from tractvq.encoding import group_for_model, resolve_model
    from tractvq.errors import TractogramError
    from tractvq.evaluate import model_label

    codecs = [make_baseline(name) if isinstance(name, str) else name for name in baselines]
    unfitted = [codec for codec in codecs if not codec.is_fitted]
    if unfitted:
        if fit_cache is None:
            raise ValueError("the PCA baselines need a training cache to be fitted on (fit_cache)")
        training = load_cache(fit_cache).split("train")
        for codec in unfitted:
            try:
                codec.fit(training)
            except ValueError as error:
                raise TractogramError(fit_cache, f"cannot fit {codec.name} on its training groups: {error}") from error
    settings = next((codec.settings for codec in codecs if codec.needs_fit), GroupingSettings())
    cache = load_cache(data[0]) if len(data) == 1 and (Path(data[0]) / "manifest.json").is_file() else None
    if cache is not None:
        validation = cache.split("validation")
        if len(validation) == 0:
            raise TractogramError(data[0], "has no validation groups to score")
        fitted = (settings.n_points, settings.normalization)
        if any(codec.needs_fit for codec in codecs) and (cache.settings.n_points, cache.settings.normalization) != fitted:
            raise TractogramError(
                data[0], f"its groups have {cache.settings.n_points} points and {cache.settings.normalization!r}"
                f" normalisation, but the PCA baselines were fitted on groups of {fitted[0]} and {fitted[1]!r}")
    else:
        records = tractvq_io.find_tractograms(*data)
    rows, labels = [], []
    for name in models:
        model, source = resolve_model(name)
        label = model_label(source or name, labels)
        labels.append(label)
        groups = validation if cache is not None else group_for_model(records, model, reference=reference)
        row = model_row(model, groups, threshold_mm=threshold_mm, seed=seed)
        rows.append({"label": label, "kind": _kind(row["discrete"]),
                     "bytes_per_streamline": row["bytes_per_bundle"] / groups.settings.group_size, **row})
    if codecs:
        groups, originals = (validation, None) if cache is not None else _read_groups(records, settings, reference)
        rows += [score_baseline(codec, groups, originals=originals, threshold_mm=threshold_mm, seed=seed)
                 for codec in codecs]
    return rows


def _read_groups(records, settings, reference):
    """The groups of ``records`` made with ``settings``, and each bundle's streamlines as read
    (in RASMM, voxel-centre origin, before resampling)."""
    from tractvq import io as tractvq_io
    from tractvq.bundles import GroupedBundles, group

    parts, originals = [], []
    for record in records:
        tractogram = tractvq_io.read_record(record, reference)
        parts.append(group(tractogram, settings, subject=record.subject, name=record.bundle, path=record.path))
        originals.append(tractogram.streamlines)  # group() moved it to RASMM and the voxel centre
    return GroupedBundles.concatenate(parts), originals


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
    bytes per streamline, with the published points (black crosses); right: mean MDF in mm
    against bytes per streamline. Bytes on a log axis; models as dots (discrete codes blue,
    continuous latents grey), baselines as orange squares, each labelled with its ``label``
    (or ``quantizer``); a dashed line is the frontier of the rows (the published points
    left out): the highest BUAN, and the lowest MDF, reached at or below each size.

    Parameters
    ----------
    rows : sequence of mapping
        With ``buan_mm``, ``mdf_mm``, ``bytes_per_streamline`` (else ``bytes_per_bundle`` of
        64 streamlines), ``kind`` (``"baseline"``) or ``discrete``, and ``label`` or
        ``quantizer``.
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
    sizes = [_bytes_per_streamline(row) for row in rows]
    for row, size in zip(rows, sizes):
        baseline = row.get("kind") == "baseline"
        colour = "tab:orange" if baseline else "tab:blue" if row.get("discrete") else "tab:grey"
        label = row.get("label") or row["quantizer"]
        for axes, key in ((buan_axes, "buan_mm"), (mdf_axes, "mdf_mm")):
            axes.scatter(size, row[key], color=colour, marker="s" if baseline else "o", zorder=3)
            axes.annotate(label, (size, row[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for axes, key, better in ((buan_axes, "buan_mm", max), (mdf_axes, "mdf_mm", min)):
        frontier = _frontier(sizes, [row[key] for row in rows], better)
        if frontier:
            axes.step(*zip(*frontier), where="post", color="black", linewidth=0.8, linestyle="--", zorder=2)
    if published:
        for name, size, buan in PUBLISHED_POINTS:
            buan_axes.scatter(size / _BUNDLE, buan, marker="x", color="black", zorder=3)
            buan_axes.annotate(f"{name} (published)", (size / _BUNDLE, buan), fontsize=7, xytext=(3, -9),
                               textcoords="offset points")
    buan_axes.axhline(0.99, color="tab:red", linewidth=0.8, linestyle=":")
    buan_axes.set_ylabel(f"BUAN at {threshold_mm:g} mm (clust_thr 0), higher is better")
    mdf_axes.set_ylabel("mean MDF (mm), lower is better")
    for axes in (buan_axes, mdf_axes):
        axes.set_xscale("log")
        axes.set_xlabel("bytes per streamline")
        axes.grid(alpha=0.3, which="both")
    legend = "dots: models (blue discrete, grey continuous), orange squares: baselines, x: published, dashed: frontier"
    figure.suptitle((title + "\n" if title else "") + legend, fontsize=10)
    figure.savefig(path, dpi=120)


def _bytes_per_streamline(row: Mapping) -> float:
    size = row.get("bytes_per_streamline")
    return float(size) if size is not None and not math.isnan(size) else row["bytes_per_bundle"] / _BUNDLE


def _frontier(sizes: Sequence[float], values: Sequence[float], better) -> list[tuple[float, float]]:
    """The points ``(size, value)`` that no smaller-or-equal size beats (``better`` is
    :func:`max` or :func:`min`), by increasing size; NaN values left out."""
    points = sorted((size, value) for size, value in zip(sizes, values) if not math.isnan(value))
    frontier: list[tuple[float, float]] = []
    for size, value in points:
        if frontier and better(value, frontier[-1][1]) == frontier[-1][1]:
            continue
        if frontier and frontier[-1][0] == size:
            frontier.pop()
        frontier.append((size, value))
    return frontier
