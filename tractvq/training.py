"""Training a bundle autoencoder on a training cache, resumable exactly, on one or many
processes.

:func:`train` runs the loop and owns the run folder:

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

Exact resumption
----------------
A run interrupted at step ``k`` and resumed ends with the same weights, bit for bit, as an
uninterrupted one (same device, same number of processes and threads; eager or compiled):

- batches and augmentation are pure functions of ``(seed, step)``
  (:class:`tractvq.data.StepSampler`), so there is no data-loader state;
- the checkpoint holds everything else that changes: weights and buffers (EMA codebooks,
  code-usage counters, annealing steps), optimizer and schedule state, and the torch random
  states of every rank (quantizer noise: Gumbel, NSVQ, dead-code replacement);
- validation runs in eval mode under :func:`torch.inference_mode` inside
  :func:`torch.random.fork_rng`, seeded by ``seed``, so it changes no training state (and
  its metrics are reproducible even for stochastic bottlenecks such as VQ-Diff's).

Resuming with a larger ``steps`` is allowed (a cosine schedule then stretches to the new
length, so it is not the same run as one planned that long).

Interruption
------------
SIGINT (Ctrl-C) and SIGTERM (what ``torchrun`` sends its workers when it is stopped) only
set a flag; the loop stops at the next step boundary, writes a checkpoint of the completed
steps, the metrics and the curves, and raises :class:`TrainingInterrupted` (a
:class:`KeyboardInterrupt`). A second Ctrl-C stops at once, keeping the last checkpoint. A
:class:`KeyboardInterrupt` raised by a callback also saves a checkpoint.

Several processes
-----------------
Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) :func:`train`
initialises :mod:`torch.distributed` (gloo on the CPU, NCCL on CUDA, rank ``r`` on
``cuda:LOCAL_RANK``), wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` and gives each rank its contiguous slice
of every global batch of ``batch_size`` groups (which must divide evenly). Only rank 0
validates, writes files and shows progress. Quantizer state that changes outside autograd
stays identical on all ranks: DDP broadcasts buffers (EMA codebooks, usage counters) from
rank 0 before each forward, and after each step the trainer broadcasts the quantizer's
parameters from rank 0 (dead-code replacement edits the codebook in place, from each rank's
own latents). The price is that such updates see rank 0's slice of the batch only.
Each rank draws its own quantizer noise (seeded by ``(seed, rank)``).

Speed
-----
AdamW runs fused (one kernel for all parameters); ``compile=True`` compiles the training
forward with :func:`torch.compile`; the ``tractvq train`` command makes idle OpenMP threads
sleep (``OMP_WAIT_POLICY=PASSIVE``), which keeps two CPU threads fast on cores shared with
other jobs. ``benchmarks/bench_train.py`` measures the options.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from tractvq import __version__
from tractvq.cache import load_cache
from tractvq.data import Augmentation, GroupDataset, StepSampler
from tractvq.errors import ModelError, OutputError, TractvqError
from tractvq.metrics import mean_mdf_mm
from tractvq.outputs import atomic_output

__all__ = [
    "LR_SCHEDULES",
    "DEVICES",
    "TrainConfig",
    "TrainingInterrupted",
    "RunConfigError",
    "RUN_FILES",
    "train",
    "read_run_configs",
    "resolve_device",
]

LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: The files :func:`train` writes in a run folder.
RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.jsonl", "metrics.csv", "curves.png", "config.json")
#: Columns of ``metrics.csv`` (``metrics.jsonl`` has these and every loss part).
METRIC_COLUMNS = (
    "step", "epoch", "lr", "train_loss", "val_loss", "val_mse", "val_mdf_mm",
    "val_perplexity", "val_usage", "elapsed_s",
)
#: Fields of a :class:`TrainConfig` that a resumed run may change.
RESUMABLE_FIELDS = ("steps", "validate_every", "checkpoint_every", "device", "num_threads", "compile")
_CHECKPOINT_FORMAT = "tractvq-training-checkpoint"
_CHECKPOINT_VERSION = 1
_RANK_SEED_STREAM = 2  # keeps the per-rank torch seeds apart from tractvq.data's streams


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyperparameter (the model's are in
    :class:`~tractvq.models.config.ModelConfig`).

    Parameters
    ----------
    steps : int
        Optimizer steps in all.
    batch_size : int
        Groups per step, over all processes.
    lr : float
        Peak learning rate of AdamW (2e-4, van den Oord et al. 2017's VQ-VAE).
    lr_schedule : {"cosine", "constant"}
        After the warm-up: cosine decay to ``final_lr_fraction * lr`` at ``steps``, or
        constant.
    warmup_steps : int
        Steps of linear warm-up from ``lr / warmup_steps``.
    final_lr_fraction : float
        The cosine schedule's last learning rate, as a fraction of ``lr``.
    weight_decay : float
        AdamW's decoupled weight decay.
    grad_clip : float or None
        Clip the global gradient norm to this value; None: no clipping.
    seed : int
        Seed of the initial weights, the batches, the augmentation and the quantizers'
        noise.
    validate_every : int
        Validate (and write a metrics row) every this many steps, and after the last.
    checkpoint_every : int
        Write ``checkpoint.pt`` every this many steps, and after the last.
    augmentation : Augmentation
        Augmentation of the training groups (:mod:`tractvq.data`); off by default.
    device : {"auto", "cpu", "cuda"}
        Where to train: ``auto`` takes CUDA when available.
    num_threads : int or None
        CPU threads of torch (:func:`torch.set_num_threads`); None leaves torch's default.
    compile : bool
        Run the training forward through :func:`torch.compile` (inductor; needs a C++
        compiler on the CPU). A one-off compile of tens of seconds for about 20% faster
        ``paper`` steps on the CPU (``benchmarks/bench_train.py``); validation stays eager.
    """

    steps: int = 10_000
    batch_size: int = 64
    lr: float = 2e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    validate_every: int = 500
    checkpoint_every: int = 1000
    augmentation: Augmentation = field(default_factory=Augmentation)
    device: str = "auto"
    num_threads: int | None = None
    compile: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "validate_every", "checkpoint_every"):
            _check_integer(name, getattr(self, name), minimum=1)
        _check_integer("warmup_steps", self.warmup_steps, minimum=0)
        _check_integer("seed", self.seed, minimum=0)
        if self.num_threads is not None:
            _check_integer("num_threads", self.num_threads, minimum=1)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        if self.grad_clip is not None and not 0 < self.grad_clip < math.inf:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if isinstance(self.augmentation, Mapping):
            object.__setattr__(self, "augmentation", Augmentation(**self.augmentation))
        if not isinstance(self.augmentation, Augmentation):
            raise ValueError(f"augmentation must be an Augmentation, got {self.augmentation!r}")
        if not (self.device in DEVICES or (isinstance(self.device, str) and self.device.startswith("cuda:"))):
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")

    def to_dict(self) -> dict:
        """The config as JSON-able data (``augmentation`` as a dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict`'s output.

        Raises
        ------
        ValueError
            If a key is not a field or a value is invalid.
        """
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown training config key(s) {', '.join(map(repr, unknown))};"
                f" the keys are: {', '.join(sorted(known))}"
            )
        return cls(**data)


def _check_integer(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM after saving a checkpoint.

    Attributes
    ----------
    step : int
        Completed steps, saved in ``checkpoint``.
    checkpoint : pathlib.Path or None
        The checkpoint to resume from (None if the interruption came in the middle of an
        update and the previous checkpoint was kept).
    """

    def __init__(self, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else "; the previous checkpoint is kept"
        super().__init__(f"training interrupted after step {step}{where}")


class RunConfigError(TractvqError):
    """A run cannot start as asked: the configs disagree with the checkpoint, the cache or
    the processes and devices at hand."""


class _LearningRate:
    """Multiplier of the peak learning rate at a step: linear warm-up, then cosine or constant."""

    def __init__(self, config: TrainConfig):
        self.schedule = config.lr_schedule
        self.warmup = config.warmup_steps
        self.total = config.steps
        self.final = config.final_lr_fraction

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------ processes
@dataclass
class _Processes:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _environment_processes() -> _Processes:
    """The torchrun layout from the environment (one process without it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return _Processes()
    return _Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``name``.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda"} or "cuda:N"
        ``auto``: CUDA if available, else the CPU.
    local_rank : int, optional
        Under torchrun, the process's GPU on its node (``cuda`` becomes ``cuda:local_rank``).

    Raises
    ------
    ValueError
        If CUDA is asked for and not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name if ":" in name else f"cuda:{local_rank}")


def _start_processes(processes: _Processes, device: torch.device) -> None:
    import torch.distributed as dist

    if not processes.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    processes.initialised_here = True


# --------------------------------------------------------------------- run folder
def _check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse a run folder that cannot be used as asked (reads only)."""
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


def _make_run_dir(run_dir: Path, *, force: bool) -> None:
    """Create a new run's folder; with ``force``, delete the run files of an earlier one."""
    if force and run_dir.is_dir():
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(run_dir, f"cannot create the run folder ({error.strerror})") from error


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
    _, model_config, train_config = _read_training_checkpoint(path)
    return model_config, train_config


#: Keys of a training checkpoint and the types of their values.
_CHECKPOINT_KEYS = {
    "step": int, "model": dict, "optimizer": dict, "scheduler": dict, "rng": list, "train_sums": dict,
    "train_count": int, "elapsed_s": (int, float), "model_config": dict, "train_config": dict, "cache": dict,
}


def _read_training_checkpoint(path: Path):
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
    from tractvq.models.checkpoint import MODEL_FORMAT, expected_layout, layout_problems, load_checkpoint
    from tractvq.models.config import ModelConfig

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
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        train_config = TrainConfig.from_dict(payload["train_config"])
    except (TypeError, ValueError) as error:
        raise ModelError(path, f"has an invalid config: {error}") from None
    problems = layout_problems(payload["model"], expected_layout(model_config, path))
    if problems:
        raise ModelError(path, f"its model weights do not fit its config: {problems}")
    return payload, model_config, train_config


def _merge_resumed_config(run_dir: Path, saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    if given is None:
        return saved
    changed = [
        f"{item.name} (saved {getattr(saved, item.name)!r}, got {getattr(given, item.name)!r})"
        for item in fields(TrainConfig)
        if item.name not in RESUMABLE_FIELDS and getattr(saved, item.name) != getattr(given, item.name)
    ]
    if changed:
        raise RunConfigError(
            run_dir, f"a resumed run can only change {', '.join(RESUMABLE_FIELDS)}; these differ: {'; '.join(changed)}"
        )
    return given


def _write_rows(run_dir: Path, rows: list[dict]) -> None:
    with atomic_output(run_dir / "metrics.jsonl", force=True) as path:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(run_dir / "metrics.csv", force=True) as path:
        path.write_text(buffer.getvalue())


def _read_rows(run_dir: Path, last_step: int) -> list[dict]:
    """Rows of ``metrics.jsonl`` up to ``last_step`` (later ones were not checkpointed)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= last_step]


def _plot_curves(run_dir: Path, rows: list[dict]) -> None:
    """Write ``curves.png``: losses, validation MDF, perplexity and usage against steps."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install tractvq[bench]): no curves.png", stacklevel=3)
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


# ------------------------------------------------------------------------ the loop
def _rank_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence((seed, _RANK_SEED_STREAM, rank)).generate_state(1)[0])


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _forked_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type)


@torch.inference_mode()
def _validate(model, dataset: GroupDataset, batch_size: int, device: torch.device, seed: int) -> dict:
    """Loss, MSE, mean MDF (mm), perplexity and usage of the whole validation split."""
    from tractvq.quantizers import codebook_stats

    was_training = model.training
    model.eval()
    groups = dataset.groups
    totals: dict[str, float] = {}
    squared_error = 0.0
    distances, indices = [], []
    with _forked_rng(device):
        torch.manual_seed(seed)  # stochastic bottlenecks (VQ-Diff's "sample") validate reproducibly
        for start in range(0, len(dataset), batch_size):
            rows = np.arange(start, min(start + batch_size, len(dataset)))
            batch = dataset.batch(rows).to(device)  # (b, 3, S, P)
            output = model(batch)
            _, parts = model.loss(batch, output)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value * len(rows)
            reconstruction = output.reconstruction.float()
            squared_error += float(((reconstruction - batch) ** 2).sum())
            subset = groups.select(rows)
            reconstruction_mm = subset.denormalize(reconstruction.cpu().numpy())  # (b, S, P, 3)
            distances.append(mean_mdf_mm(subset.denormalize(), reconstruction_mm, subset.mask))
            if output.quantizer_output.indices is not None:
                indices.append(output.quantizer_output.indices.reshape(-1).cpu())
    model.train(was_training)
    metrics = {f"val_{key}": value / len(dataset) for key, value in totals.items()}
    metrics["val_mse"] = squared_error / (len(dataset) * dataset.data[0].numel())
    metrics["val_mdf_mm"] = float(np.nanmean(np.concatenate(distances)))
    codebook_size = getattr(model.quantizer, "codebook_size", None)
    if indices and codebook_size:
        stats = codebook_stats(torch.cat(indices), int(codebook_size))
        metrics["val_perplexity"], metrics["val_usage"] = float(stats["perplexity"]), float(stats["usage"])
    else:  # continuous bottleneck (or no codebook size): the batch statistics, if any
        metrics.setdefault("val_perplexity", None)
        metrics.setdefault("val_usage", None)
    return metrics


class _StopFlag:
    """SIGINT/SIGTERM set a flag (checked between steps); a second Ctrl-C raises at once."""

    def __init__(self):
        self.raised = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False


def train(
    cache_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config=None,
    train_config: TrainConfig | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train a bundle autoencoder on a training cache.

    Parameters
    ----------
    cache_path : str or os.PathLike
        A cache folder written by :func:`tractvq.cache.prepare`; training uses its
        ``train`` split, validation its ``validation`` split.
    run_dir : str or os.PathLike
        The run folder (created with its parents; see the module docstring for its files).
    model_config : ModelConfig, optional
        The model. Its ``grouping`` is replaced by the cache's preprocessing, which is what
        the model sees. Required for a new run; on resume it defaults to the checkpoint's
        and must equal it.
    train_config : TrainConfig, optional
        Training hyperparameters (default ``TrainConfig()``). On resume it defaults to the
        checkpoint's; only :data:`RESUMABLE_FIELDS` may differ from it.
    resume : bool, optional
        Continue the run of ``run_dir`` from its ``checkpoint.pt``.
    force : bool, optional
        Start over in a non-empty ``run_dir`` (its tractvq run files are deleted; other files
        are left alone).
    progress : bool, optional
        Show a progress bar (rank 0 only).
    callback : callable, optional
        ``callback(step, logs)`` after each completed step (``step`` counts completed steps;
        ``logs`` are this rank's loss parts). A :class:`KeyboardInterrupt` from it stops
        training like Ctrl-C.

    Returns
    -------
    dict
        The last metrics row (``step``, ``train_loss``, ``val_mse``, ``val_mdf_mm``, ...).

    Raises
    ------
    OutputError
        If ``run_dir`` is not empty and neither ``resume`` nor ``force`` is given, or has no
        checkpoint to resume from.
    TractogramError
        If ``cache_path`` is not a tractvq cache.
    ValueError
        If the configs are invalid, disagree with the checkpoint or the cache.
    TrainingInterrupted
        After Ctrl-C or SIGTERM, once the checkpoint is written.
    """
    from tractvq.models.autoencoder import BundleAutoencoder
    from tractvq.models.checkpoint import save_checkpoint, save_model
    from tractvq.models.config import ModelConfig

    run_dir = Path(run_dir)
    cache = load_cache(cache_path)
    processes = _environment_processes()
    _check_run_dir(run_dir, resume=resume, force=force)
    payload = None
    if resume:
        payload, saved_model, saved_train = _read_training_checkpoint(run_dir / "checkpoint.pt")
        if model_config is not None and _with_grouping(model_config, cache, cache_path) != saved_model:
            raise RunConfigError(
                run_dir, f"the model config differs from the checkpoint's: got {model_config}, saved {saved_model}"
            )
        model_config = saved_model
        train_config = _merge_resumed_config(run_dir, saved_train, train_config)
        if payload["cache"]["settings"] != asdict(cache.settings) or payload["cache"]["groups"] != len(cache.groups):
            raise RunConfigError(
                cache_path,
                f"not the cache this run was trained on (saved {payload['cache']['groups']} groups with"
                f" {payload['cache']['settings']}, got {len(cache.groups)} groups with {asdict(cache.settings)})",
            )
    else:
        if model_config is None:
            raise ValueError("a new run needs a model_config")
        if not isinstance(model_config, ModelConfig):
            raise ValueError(f"model_config must be a ModelConfig, got {type(model_config).__name__}")
        model_config = _with_grouping(model_config, cache, cache_path)
        train_config = train_config or TrainConfig()
    if not isinstance(train_config, TrainConfig):
        raise ValueError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")

    if train_config.batch_size % processes.world_size:
        raise RunConfigError(
            None,
            f"the batch size must be divisible by the number of processes, got {train_config.batch_size}"
            f" for {processes.world_size}",
        )
    training_groups = int(np.count_nonzero(~cache.validation))
    if train_config.batch_size > training_groups:  # a batch is drawn in full: it would repeat groups
        raise RunConfigError(
            cache_path,
            f"the batch size {train_config.batch_size} is more than the {training_groups} groups of the"
            " training split; give at most that (--batch)",
        )
    try:
        device = resolve_device(train_config.device, processes.local_rank)
    except ValueError as error:
        raise RunConfigError(None, str(error)) from None
    torch.manual_seed(train_config.seed)  # the same initial weights on every rank
    try:
        model = BundleAutoencoder(model_config)
    except ValueError as error:  # e.g. a bottleneck option the quantizer does not take
        raise RunConfigError(None, f"cannot build the model: {error}") from None
    threads = torch.get_num_threads()
    try:
        if train_config.num_threads is not None:
            torch.set_num_threads(train_config.num_threads)  # restored on the way out
        _start_processes(processes, device)  # every rank has checked the run folder by now
        if processes.main and not resume:
            _make_run_dir(run_dir, force=force)
        return _run(
            cache, cache_path, run_dir, model.to(device), model_config, train_config, payload, processes,
            device, progress=progress, callback=callback, modules=(save_checkpoint, save_model),
        )
    finally:
        torch.set_num_threads(threads)
        if processes.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _check_optimizer_state(optimizer) -> None:
    """Raise ValueError unless each loaded optimizer state tensor has its parameter's shape."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if name != "step" and (not isinstance(value, torch.Tensor) or value.shape != parameter.shape):
                    raise ValueError(f"optimizer state {name!r} does not fit its parameter {tuple(parameter.shape)}")


def _with_grouping(model_config, cache, cache_path):
    """The model config with the cache's preprocessing (which the model will see)."""
    try:
        return replace(model_config, grouping=cache.settings)
    except ValueError as error:
        raise RunConfigError(cache_path, f"the model cannot take this cache's groups: {error}") from None


def _run(
    cache, cache_path, run_dir, model, model_config, config, payload, processes, device, *,
    progress, callback, modules,
):
    """The training loop of :func:`train`, once everything is checked and built."""
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from tractvq.models.basis import fit_bases

    save_checkpoint, save_model = modules
    train_groups = cache.split("train")
    validation_groups = cache.split("validation")
    dataset = GroupDataset(train_groups, config.augmentation, seed=config.seed)
    if payload is None and model_config.preset == "basis":  # resumed runs have theirs in the state dict
        fit_bases(model, train_groups.data, train_groups.mask)
    validation = GroupDataset(validation_groups) if len(validation_groups) else None
    if validation is None and processes.main:
        warnings.warn(f"{cache_path}: the cache has no validation groups; validation metrics stay empty", stacklevel=3)
    sampler = StepSampler(
        len(dataset), config.batch_size, seed=config.seed, rank=processes.rank, world_size=processes.world_size
    )

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # one kernel for all parameters
    )
    schedule = _LearningRate(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start, rows, sums, count, elapsed = 0, [], {}, 0, 0.0
    if payload is not None:
        states = payload["rng"]
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            _check_optimizer_state(optimizer)
            scheduler.load_state_dict(payload["scheduler"])  # keeps `schedule`, from the config
            if len(states) == processes.world_size:
                _set_rng_state(states[processes.rank], device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise ModelError(
                run_dir / "checkpoint.pt", f"cannot resume from it ({type(error).__name__}: {first_line})"
            ) from None
        start, elapsed = payload["step"], float(payload["elapsed_s"])
        sums, count = dict(payload["train_sums"]), payload["train_count"]
        if len(states) != processes.world_size:
            warnings.warn(
                f"the checkpoint was written by {len(states)} processes, this run has {processes.world_size}:"
                " the quantizers' random streams restart (batches are unchanged)",
                stacklevel=3,
            )
            torch.manual_seed(_rank_seed(config.seed + start, processes.rank))
        rows = _read_rows(run_dir, start) if processes.main else []
    else:
        torch.manual_seed(_rank_seed(config.seed, processes.rank))
    trained = model
    if processes.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # every registered bottleneck uses all its parameters in each step (checked in the
            # tests); a new one that does not makes DDP fail with a message naming this flag
            find_unused_parameters=False,
        )
    if config.compile:
        trained = torch.compile(trained)
    if processes.main and payload is None:
        with atomic_output(run_dir / "config.json", force=True) as path:
            path.write_text(json.dumps({
                "tractvq_version": __version__,
                "cache": os.fspath(cache_path),
                "world_size": processes.world_size,
                "model_config": model_config.to_dict(),
                "train_config": config.to_dict(),
            }, indent=2) + "\n")

    def checkpoint(step: int) -> Path:
        states = [_rng_state(device)]
        if processes.distributed:
            states = [None] * processes.world_size
            dist.all_gather_object(states, _rng_state(device))
            states = [{key: value.cpu() for key, value in state.items()} for state in states]
        path = run_dir / "checkpoint.pt"
        if processes.main:
            save_checkpoint({
                "format": _CHECKPOINT_FORMAT,
                "format_version": _CHECKPOINT_VERSION,
                "tractvq_version": __version__,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                # the schedule itself is rebuilt from the config: only its position is state
                "scheduler": {**scheduler.state_dict(), "lr_lambdas": [None]},
                "rng": states,
                "train_sums": dict(sums),
                "train_count": count,
                "elapsed_s": elapsed,
                "model_config": model_config.to_dict(),
                "train_config": config.to_dict(),
                "world_size": processes.world_size,
                "cache": {
                    "path": os.fspath(cache_path), "groups": len(cache.groups), "settings": asdict(cache.settings),
                },
            }, path, force=True)
            _write_rows(run_dir, rows)
        if processes.distributed:
            dist.barrier()
        return path

    def metrics_row(step: int) -> dict:
        nonlocal sums, count
        keys = sorted(sums)
        totals = torch.tensor([sums[key] for key in keys] + [count], dtype=torch.float64)
        if processes.distributed:
            totals = totals.to(device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        means = {f"train_{key}": float(value) / max(float(totals[-1]), 1) for key, value in zip(keys, totals[:-1])}
        sums, count = {}, 0
        row = {"step": step, "epoch": sampler.epoch(step), "lr": scheduler.get_last_lr()[0]}
        row |= means
        if processes.main:
            row |= {key: None for key in METRIC_COLUMNS if key.startswith("val_")}
            if validation is not None:
                row |= _validate(model, validation, config.batch_size, device, config.seed)
        row["elapsed_s"] = elapsed
        return row

    bar = tqdm(
        total=config.steps, initial=start, desc="training", unit="step",
        disable=not progress or not processes.main, dynamic_ncols=True,
    )
    step = start
    in_step = False  # between steps the state is consistent and can be saved
    stop = _StopFlag()
    try:
        with stop:
            model.train()
            while step < config.steps:
                if _agree(stop.raised, processes, device):
                    raise KeyboardInterrupt
                began = time.perf_counter()
                in_step = True
                if hasattr(model.quantizer, "set_step"):
                    model.quantizer.set_step(step)  # annealed Gumbel temperatures
                batch = dataset.batch(sampler.indices(step), sampler.positions(step)).to(device, non_blocking=True)
                output = trained(batch)
                loss, parts = model.loss(batch, output)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if processes.distributed:
                    with torch.no_grad():
                        for tensor in model.quantizer.parameters():
                            dist.broadcast(tensor.data, src=0)
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                step += 1
                elapsed += time.perf_counter() - began
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4g}", refresh=False)
                if step % config.validate_every == 0 or step == config.steps:
                    rows.append(metrics_row(step))
                    if processes.main:
                        _write_rows(run_dir, rows)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    checkpoint(step)
                in_step = False
                if callback is not None:
                    callback(step, parts)
    except KeyboardInterrupt:
        bar.close()
        if in_step or (processes.distributed and not stop.raised):
            # mid-step (a second Ctrl-C: the forward may have changed buffers and random
            # states already), or one rank alone: no consistent state to save
            raise TrainingInterrupted(step, None) from None
        path = checkpoint(step)
        if processes.main:
            _plot_curves(run_dir, rows)
        raise TrainingInterrupted(step, path) from None
    bar.close()
    if not rows or rows[-1]["step"] != step:  # a resumed run that had already finished
        rows.append(metrics_row(step))
    final = rows[-1]
    if processes.main:
        _write_rows(run_dir, rows)
        _plot_curves(run_dir, rows)
        save_model(model, run_dir / "model.pt", force=True, extra={"step": step, "metrics": final})
    if processes.distributed:
        dist.barrier()
    return dict(final)


def _agree(flag: bool, processes: _Processes, device: torch.device) -> bool:
    """Whether any rank raised ``flag`` (every rank must call this at the same point)."""
    if not processes.distributed:
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
