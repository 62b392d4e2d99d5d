"""The quantizer zoo on real bundles: one bundle autoencoder per quantizer, equal budget.

:func:`run_streamline_benchmark` trains the same preset with each quantizer on a training
cache (:func:`tractvq.cache.prepare`) through :func:`tractvq.training.train`, with the same
training config and seed, then scores each model on the cache's validation groups with
:mod:`tractvq.scoring`: BUAN under the published protocol and in millimetres, mean MDF in
mm, MSE, code perplexity and usage, and the storage of one bundle's code. Each model's run
folder ``RUNS/<quantizer>`` is an ordinary ``tractvq train`` run (checkpoint, metrics, curves,
``model.pt``), kept as it goes, so a benchmark that stops can be resumed and its models can be
evaluated, rendered or shipped on their own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from tractvq.bench.report import SCORE_COLUMNS
from tractvq.buan import protocol
from tractvq.evaluate import run_model
from tractvq.scoring import code_statistics, score_groups
from tractvq.training import TrainConfig, read_run_configs, train

__all__ = ["STREAMLINE_COLUMNS", "model_row", "plot_streamline_results", "run_streamline_benchmark", "score_model", "train_quantizer"]

#: (row key, Markdown header, format) of the streamline benchmark's table.
STREAMLINE_COLUMNS = (
    ("quantizer", "Quantizer", "{}"),
    ("discrete", "Kind", None),
    *SCORE_COLUMNS,
    ("ms_per_step", "ms/step", "{:.0f}"),
)


def train_quantizer(
    cache_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config,
    train_config: TrainConfig,
    *,
    progress: bool = False,
) -> Path:
    """Train (or finish, or reuse) one benchmark run and return its ``model.pt``.

    A run folder that already holds this exact model and training config is reused: its
    ``model.pt`` when the run finished, its checkpoint (resumed exactly) when it stopped.
    Any other content is an error, so results are never mixed across settings.

    Parameters
    ----------
    cache_path : str or os.PathLike
        The training cache.
    run_dir : str or os.PathLike
        The run folder (``tractvq train -o``).
    model_config : ModelConfig
        The model; its ``grouping`` is the cache's.
    train_config : TrainConfig
    progress : bool, optional

    Returns
    -------
    pathlib.Path
        The trained model file.

    Raises
    ------
    tractvq.training.RunConfigError
        If ``run_dir`` holds a run with other settings.
    """
    from tractvq.cache import load_cache
    from tractvq.training import RunConfigError

    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt"
    if not (run_dir / "checkpoint.pt").is_file():
        train(cache_path, run_dir, model_config, train_config, force=run_dir.exists(), progress=progress)
        return model_path
    saved_model, saved_train = read_run_configs(run_dir)
    expected_model = replace(model_config, grouping=load_cache(cache_path).settings)
    if (saved_model, saved_train) != (expected_model, train_config):
        raise RunConfigError(
            run_dir, "holds a run with other settings; choose another output folder or start over with --force"
        )
    if not _finished(run_dir, train_config.steps):
        train(cache_path, run_dir, model_config, train_config, resume=True, progress=progress)
    return model_path


def _finished(run_dir: Path, steps: int) -> bool:
    from tractvq.models.checkpoint import load_checkpoint

    return (run_dir / "model.pt").is_file() and load_checkpoint(run_dir / "checkpoint.pt")["step"] >= steps


def _ms_per_step(run_dir: Path) -> float:
    """Wall time per step of a run, validation included, from its last metrics row."""
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    if not last.get("step") or last.get("elapsed_s") is None:
        return math.nan
    return 1000.0 * float(last["elapsed_s"]) / float(last["step"])


def score_model(model, groups, *, threshold_mm: float = 5.0, seed: int = 0, workers: int | None = None) -> dict:
    """Score a model on groups: BUAN (published protocol and in mm), MDF, MSE, codes.

    Parameters
    ----------
    model : BundleAutoencoder
    groups : GroupedBundles
        Normalised as the model was trained (e.g. a cache's validation split).
    threshold_mm : float, optional
        The millimetre protocol's BUAN threshold.
    seed : int, optional
        BUAN's seed.
    workers : int, optional
        See :func:`tractvq.buan.buan_scores`.

    Returns
    -------
    dict
        ``buan_paper``, ``buan_mm``, ``mdf_mm``, ``mdf_max_mm``, ``mse`` (means over the
        groups), ``perplexity`` and ``usage`` (of all codes; NaN for continuous models),
        ``groups``.
    """
    reconstruction, indices = run_model(model, groups.data)
    paper = score_groups(groups, reconstruction, metrics=("buan", "mdf", "mse"), protocol=protocol("paper"),
                         seed=seed, workers=workers)
    millimetres = score_groups(groups, reconstruction, metrics=("buan",), protocol=protocol("mm", threshold=threshold_mm),
                               seed=seed, workers=workers)
    codes = (code_statistics(indices, model.quantizer.codebook_size) if indices is not None
             else {"perplexity": math.nan, "usage": math.nan})
    return {
        "buan_paper": float(paper.values["buan"].mean()),
        "buan_mm": float(millimetres.values["buan"].mean()),
        "mdf_mm": float(paper.values["mdf_mean"].mean()),
        "mdf_max_mm": float(paper.values["mdf_max"].mean()),
        "mse": float(paper.values["mse"].mean()),
        **codes,
        "groups": len(groups),
    }


def model_row(model, groups, *, threshold_mm: float = 5.0, seed: int = 0) -> dict:
    """A model's benchmark row: what it stores per bundle and :func:`score_model`'s scores.

    Returns
    -------
    dict
        ``quantizer`` (the bottleneck), ``discrete``, ``codebook_size`` (None for continuous
        latents), ``bits_per_bundle``, ``bytes_per_bundle`` (indices packed at
        ``ceil(log2 K)`` bits, or float32 numbers) and the :func:`score_model` keys.
    """
    return {
        "quantizer": model.config.bottleneck,
        "discrete": model.discrete,
        "codebook_size": model.quantizer.codebook_size if model.discrete else None,
        "bits_per_bundle": model.bytes_per_group * 8 if model.discrete else model.numbers_per_group * 32,
        "bytes_per_bundle": model.bytes_per_group,
        **score_model(model, groups, threshold_mm=threshold_mm, seed=seed),
    }


def run_streamline_benchmark(
    names: Sequence[str],
    cache_path: str | os.PathLike,
    runs_dir: str | os.PathLike,
    *,
    model_config_for: Callable[[str], object],
    train_config: TrainConfig,
    threshold_mm: float = 5.0,
    seed: int = 0,
    progress: bool = False,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train every quantizer's model at equal budget and score it on the validation groups.

    Parameters
    ----------
    names : sequence of str
        Quantizer names (:func:`tractvq.quantizers.available`).
    cache_path : str or os.PathLike
        A training cache; its validation split is scored.
    runs_dir : str or os.PathLike
        Folder of the runs, one ``tractvq train`` run folder per quantizer (see
        :func:`train_quantizer` for reuse of existing runs).
    model_config_for : callable
        ``model_config_for(name)`` is the :class:`~tractvq.models.config.ModelConfig` of
        quantizer ``name`` (the same preset for all, so only the bottleneck differs).
    train_config : TrainConfig
        The same for every quantizer (steps, batch, learning rate, seed).
    threshold_mm : float, optional
        BUAN threshold of the millimetre protocol.
    seed : int, optional
        BUAN's seed.
    progress : bool, optional
        Training progress bars.
    on_row : callable, optional
        Called with each row as soon as it is measured.

    Returns
    -------
    list of dict
        One row per quantizer: ``quantizer``, ``discrete``, ``codebook_size``,
        ``bits_per_bundle``, ``bytes_per_bundle``, the :func:`score_model` keys, ``steps``,
        ``ms_per_step`` (training wall time per step, validation included) and ``run``.
    """
    from tractvq.cache import load_cache
    from tractvq.models.checkpoint import load_model

    validation = load_cache(cache_path).split("validation")
    if len(validation) == 0:
        raise ValueError(f"the cache {os.fspath(cache_path)} has no validation groups to score")
    rows = []
    for name in names:
        run_dir = Path(runs_dir) / name
        model = load_model(train_quantizer(cache_path, run_dir, model_config_for(name), train_config, progress=progress))
        row = {
            **model_row(model, validation, threshold_mm=threshold_mm, seed=seed),
            "steps": train_config.steps,
            "ms_per_step": _ms_per_step(run_dir),
            "run": os.fspath(run_dir),
        }
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def plot_streamline_results(rows: Sequence[Mapping], path: str | os.PathLike, *, title: str | None = None) -> None:
    """Bars of the mean MDF (mm) and BUAN of each quantizer, written to ``path``.

    Discrete bottlenecks are blue, continuous ones grey; the storage of a bundle's code is
    written next to each MDF bar. Uses matplotlib's object interface (no display needed).
    """
    from matplotlib.figure import Figure

    names = [row["quantizer"] for row in rows]
    positions = list(range(len(rows)))
    colours = ["tab:blue" if row["discrete"] else "tab:grey" for row in rows]
    figure = Figure(figsize=(11, 0.45 * len(rows) + 1.8), layout="constrained")
    left, middle, right = figure.subplots(1, 3, sharey=True)
    left.barh(positions, [row["mdf_mm"] for row in rows], color=colours)
    for position, row in zip(positions, rows):
        left.text(row["mdf_mm"], position, f" {row['bytes_per_bundle']:,} B", va="center", fontsize=8)
    left.set_xlabel("mean MDF (mm), lower is better")
    left.set_yticks(positions, names)
    left.invert_yaxis()
    middle.barh(positions, [row["buan_paper"] for row in rows], color=colours)
    middle.set_xlabel("BUAN, published protocol")
    middle.set_xlim(0, 1)
    right.barh(positions, [row["buan_mm"] for row in rows], color=colours)
    right.set_xlabel("BUAN in mm")
    right.set_xlim(0, 1)
    for axes in (left, middle, right):
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle((title + "\n" if title else "") + "blue: discrete codes, grey: continuous latents", fontsize=10)
    figure.savefig(path, dpi=120)

