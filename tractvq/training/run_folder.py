"""The run folder of :func:`~tractvq.training.train`: its files, and the checkpoint a run
resumes from, checked before anything is built from it.

``checkpoint.pt``
    The latest state: model, optimizer, learning-rate schedule, completed steps, every
    rank's random number generator states, the running training-loss sums, both configs.
    Written atomically (:func:`tractvq.models.checkpoint.save_checkpoint`) every
    ``checkpoint_every`` steps, at the end, and when the run is interrupted.
``model.pt``
    The final model (:func:`tractvq.models.checkpoint.save_model`), with the last
    validation metrics in its ``extra``.
``metrics.jsonl``, ``metrics.csv``
    One row per validation: ``step``, ``epoch``, ``lr``, ``train_loss`` (mean since the
    previous row), ``val_loss``, ``val_mse``, ``val_mdf_mm``, ``val_perplexity``,
    ``val_usage``, ``elapsed_s`` (seconds spent in training steps, over all sessions of the
    run); the JSONL rows also hold every loss part and quantizer statistic (``train_*``,
    ``val_*``). Validation perplexity and usage are those of the codes chosen over the whole
    validation split (empty for continuous bottlenecks).
``curves.png``
    Those curves (needs matplotlib, the ``bench``/``viz`` extra; skipped with a warning
    without it).
``config.json``
    The model and training configs, for people.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from tractvq import __version__
from tractvq.errors import ModelError, OutputError
from tractvq.outputs import atomic_output
from tractvq.training.config import TrainConfig

__all__ = [
    "METRIC_COLUMNS",
    "RUN_FILES",
    "check_run_dir",
    "make_run_dir",
    "plot_curves",
    "read_metrics",
    "read_run_configs",
    "read_training_checkpoint",
    "write_checkpoint",
    "write_metrics",
    "write_run_config",
]

#: The files :func:`~tractvq.training.train` writes in a run folder.
RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.jsonl", "metrics.csv", "curves.png", "config.json")
#: Columns of ``metrics.csv`` (``metrics.jsonl`` has these and every loss part).
METRIC_COLUMNS = (
    "step", "epoch", "lr", "train_loss", "val_loss", "val_mse", "val_mdf_mm",
    "val_perplexity", "val_usage", "elapsed_s",
)
_CHECKPOINT_FORMAT = "tractvq-training-checkpoint"
_CHECKPOINT_VERSION = 1
#: Keys of a training checkpoint and the types of their values.
_CHECKPOINT_KEYS = {
    "step": int, "model": dict, "optimizer": dict, "scheduler": dict, "rng": list, "train_sums": dict,
    "train_count": int, "elapsed_s": (int, float), "model_config": dict, "train_config": dict, "cache": dict,
}


def check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse a run folder that cannot be used as asked (reads only).

    Raises
    ------
    ValueError
        If both ``resume`` and ``force`` are given.
    OutputError
        If ``run_dir`` is not a folder, has no checkpoint to resume from, or is not empty
        for a new run without ``force``.
    """
    if resume and force:
        raise ValueError("give resume or force, not both: resume continues a run, force starts it over")
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(run_dir, "exists and is not a folder")
    if resume:
        if not (run_dir / "checkpoint.pt").is_file():
            raise OutputError(run_dir, "has no checkpoint.pt to resume from")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise OutputError(
                run_dir,
                "is not empty; pass resume=True (--resume) to continue its run or force=True (--force) to start over",
            )


def make_run_dir(run_dir: Path, *, force: bool) -> None:
    """Create a new run's folder; with ``force``, delete the run files of an earlier one
    (:data:`RUN_FILES`; other files are left alone).

    Raises
    ------
    OutputError
        If the folder cannot be created.
    """
    if force and run_dir.is_dir():
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(run_dir, f"cannot create the run folder ({error.strerror})") from error


def write_run_config(run_dir: Path, cache_path, world_size: int, model_config, train_config: TrainConfig) -> None:
    """Write ``config.json``: the version, the cache, the number of processes and both configs."""
    with atomic_output(run_dir / "config.json", force=True) as path:
        path.write_text(json.dumps({
            "tractvq_version": __version__,
            "cache": os.fspath(cache_path),
            "world_size": world_size,
            "model_config": model_config.to_dict(),
            "train_config": train_config.to_dict(),
        }, indent=2) + "\n")


def write_checkpoint(path: Path, state: dict) -> None:
    """Write a training checkpoint of ``state`` (the keys :func:`read_training_checkpoint`
    checks), marked with its format, atomically over the previous one."""
    from tractvq.models.checkpoint import save_checkpoint

    header = {"format": _CHECKPOINT_FORMAT, "format_version": _CHECKPOINT_VERSION, "tractvq_version": __version__}
    save_checkpoint(header | state, path, force=True)


def read_training_checkpoint(path: Path):
    """A run's ``checkpoint.pt``, checked before anything is built from it: kind, keys,
    configs, and the model's weights against the model of its config.

    Returns
    -------
    payload : dict
    model_config : ModelConfig
    train_config : TrainConfig

    Raises
    ------
    ModelError
        Naming ``path``: not a training checkpoint, or one whose contents are missing,
        of the wrong type or do not fit its configs.
    """
    from tractvq.models.checkpoint import MODEL_FORMAT, checked_config, load_checkpoint

    payload = load_checkpoint(path)
    if payload.get("format") == MODEL_FORMAT:
        raise ModelError(path, "is a model file, not a training checkpoint: a run can only resume from its own checkpoint.pt")
    if payload.get("format") != _CHECKPOINT_FORMAT or payload.get("format_version") != _CHECKPOINT_VERSION:
        raise ModelError(path, f"is not a tractvq training checkpoint (version {_CHECKPOINT_VERSION})")
    wrong = [
        key for key, kind in _CHECKPOINT_KEYS.items()
        if not isinstance(payload.get(key), kind) or isinstance(payload.get(key), bool)
    ]
    if wrong:
        raise ModelError(path, f"training checkpoint with missing or malformed {', '.join(wrong)}")
    if payload["step"] < 0 or payload["train_count"] < 0 or not 0 <= payload["elapsed_s"] < math.inf:
        raise ModelError(path, "training checkpoint with a negative step, count or time")
    cache = payload["cache"]
    if not (isinstance(cache.get("groups"), int) and isinstance(cache.get("settings"), dict)):
        raise ModelError(path, "training checkpoint with a malformed cache description")
    model_config = checked_config(path, payload["model_config"], payload["model"])
    try:
        train_config = TrainConfig.from_dict(payload["train_config"])
    except (TypeError, ValueError) as error:
        raise ModelError(path, f"has an invalid training config: {error}") from None
    return payload, model_config, train_config


def read_run_configs(run_dir: str | os.PathLike):
    """The model and training configs of a run folder's checkpoint.

    Returns
    -------
    model_config : ModelConfig
    train_config : TrainConfig

    Raises
    ------
    OutputError
        If the folder has no ``checkpoint.pt``.
    ModelError
        If the checkpoint cannot be read.
    """
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise OutputError(run_dir, "has no checkpoint.pt to resume from")
    _, model_config, train_config = read_training_checkpoint(path)
    return model_config, train_config


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Write ``metrics.jsonl`` (every key) and ``metrics.csv`` (:data:`METRIC_COLUMNS`)."""
    with atomic_output(run_dir / "metrics.jsonl", force=True) as path:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(run_dir / "metrics.csv", force=True) as path:
        path.write_text(buffer.getvalue())


def read_metrics(run_dir: Path, last_step: int) -> list[dict]:
    """Rows of ``metrics.jsonl`` up to ``last_step`` (later ones were not checkpointed)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= last_step]


def plot_curves(run_dir: Path, rows: list[dict]) -> None:
    """Write ``curves.png``: losses, validation MDF, perplexity and usage against steps."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install tractvq[bench]): no curves.png", stacklevel=5)
        return
    if not rows:
        return
    steps = [row["step"] for row in rows]

    def series(key):
        return [np.nan if row.get(key) is None else row[key] for row in rows]

    figure = Figure(figsize=(12, 3.6))
    figure.subplots_adjust(left=0.08, right=0.94, bottom=0.14, top=0.9, wspace=0.35)
    FigureCanvasAgg(figure)
    loss, distance, codes = figure.subplots(1, 3)
    loss.plot(steps, series("train_loss"), marker=".", label="train loss")
    loss.plot(steps, series("val_loss"), marker=".", label="validation loss")
    loss.plot(steps, series("val_mse"), marker=".", label="validation MSE")
    if all(value > 0 for value in series("train_loss") + series("val_mse") if np.isfinite(value)):
        loss.set_yscale("log")
    loss.set(xlabel="step", title="loss (normalised units)")
    loss.legend()
    distance.plot(steps, series("val_mdf_mm"), marker=".", color="C3")
    distance.set(xlabel="step", ylabel="mm", title="validation mean MDF")
    codes.plot(steps, series("val_perplexity"), marker=".", label="perplexity")
    codes.set(xlabel="step", title="validation codebook")
    usage = codes.twinx()
    usage.plot(steps, series("val_usage"), marker=".", color="C1", label="usage")
    usage.set(ylabel="usage (fraction of codes)", ylim=(0, 1.05))
    codes.legend(loc="upper left")
    usage.legend(loc="lower right")
    with atomic_output(run_dir / "curves.png", force=True) as path:
        figure.savefig(path, dpi=100)
