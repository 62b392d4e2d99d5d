"""The training loop: :func:`train`, resumable exactly and stoppable with Ctrl-C.

Exact resumption
----------------
A run interrupted at step ``k`` and resumed ends with the same weights, bit for bit, as an
uninterrupted one (same device, same number of processes and threads; eager or compiled):

- batches and augmentation are pure functions of ``(seed, step)``
  (:class:`tractvq.data.StepSampler`), so there is no data-loader state;
- the checkpoint holds everything else that changes: weights and buffers (EMA codebooks,
  code-usage counters, annealing steps), optimizer and schedule state, and the torch random
  states of every rank (quantizer noise: Gumbel, NSVQ, dead-code replacement);
- validation changes no training state (:mod:`tractvq.training.validation`).

Resuming with a larger ``steps`` is allowed (a cosine schedule then stretches to the new
length, so it is not the same run as one planned that long).

Interruption
------------
SIGINT (Ctrl-C) and SIGTERM (what ``torchrun`` sends its workers when it is stopped) only
set a flag; the loop stops at the next step boundary, writes a checkpoint of the completed
steps, the metrics and the curves, and raises :class:`TrainingInterrupted` (a
:class:`KeyboardInterrupt`). A second Ctrl-C stops at once, keeping the last checkpoint. A
:class:`KeyboardInterrupt` raised by a callback also saves a checkpoint.

Speed
-----
AdamW runs fused (one kernel for all parameters); ``compile=True`` compiles the training
forward with :func:`torch.compile`; the ``tractvq train`` command makes idle OpenMP threads
sleep (``OMP_WAIT_POLICY=PASSIVE``), which keeps two CPU threads fast on cores shared with
other jobs. ``benchmarks/bench_train.py`` measures the options.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from tractvq.cache import load_cache
from tractvq.data import GroupDataset, StepSampler
from tractvq.errors import ModelError
from tractvq.training.config import (
    LearningRateSchedule,
    RunConfigError,
    TrainConfig,
    resumed_config,
)
from tractvq.training.processes import (
    Processes,
    agree,
    barrier,
    broadcast_parameters,
    environment_processes,
    gathered_rng_states,
    process_group,
    rank_seed,
    resolve_device,
    set_rng_state,
    summed,
)
from tractvq.training.run_folder import (
    METRIC_COLUMNS,
    check_run_dir,
    make_run_dir,
    plot_curves,
    read_metrics,
    read_training_checkpoint,
    write_checkpoint,
    write_metrics,
    write_run_config,
)
from tractvq.training.validation import validate

__all__ = ["TrainingInterrupted", "train"]


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
        The run folder (created with its parents; see :mod:`tractvq.training.run_folder`
        for its files).
    model_config : ModelConfig, optional
        The model. Its ``grouping`` is replaced by the cache's preprocessing, which is what
        the model sees. Required for a new run; on resume it defaults to the checkpoint's
        and must equal it.
    train_config : TrainConfig, optional
        Training hyperparameters (default ``TrainConfig()``). On resume it defaults to the
        checkpoint's; only :data:`~tractvq.training.config.RESUMABLE_FIELDS` may differ
        from it.
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

    run_dir = Path(run_dir)
    cache = load_cache(cache_path)
    processes = environment_processes()
    check_run_dir(run_dir, resume=resume, force=force)
    if resume:
        payload, model_config, train_config = _resumed_run(run_dir, cache, cache_path, model_config, train_config)
    else:
        payload = None
        model_config, train_config = _new_run(cache, cache_path, model_config, train_config)
    if not isinstance(train_config, TrainConfig):
        raise ValueError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    _check_batch_size(train_config, cache, cache_path, processes)
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
        with process_group(processes, device):  # every rank has checked the run folder by now
            if processes.main and not resume:
                make_run_dir(run_dir, force=force)
            trainer = _Trainer(
                cache, cache_path, run_dir, model.to(device), model_config, train_config, processes, device, payload
            )
            if processes.main and not resume:
                write_run_config(run_dir, cache_path, processes.world_size, model_config, train_config)
            return trainer.run(progress=progress, callback=callback)
    finally:
        torch.set_num_threads(threads)


def _resumed_run(run_dir: Path, cache, cache_path, model_config, train_config):
    """The checkpoint of the run to resume and the configs it goes on with; the given
    configs and the cache must agree with the checkpoint's."""
    payload, saved_model, saved_train = read_training_checkpoint(run_dir / "checkpoint.pt")
    if model_config is not None and _with_grouping(model_config, cache, cache_path) != saved_model:
        raise RunConfigError(
            run_dir, f"the model config differs from the checkpoint's: got {model_config}, saved {saved_model}"
        )
    train_config = resumed_config(run_dir, saved_train, train_config)
    saved_cache = payload["cache"]
    if saved_cache["settings"] != asdict(cache.settings) or saved_cache["groups"] != len(cache.groups):
        raise RunConfigError(
            cache_path,
            f"not the cache this run was trained on (saved {saved_cache['groups']} groups with"
            f" {saved_cache['settings']}, got {len(cache.groups)} groups with {asdict(cache.settings)})",
        )
    return payload, saved_model, train_config


def _new_run(cache, cache_path, model_config, train_config):
    """The configs of a new run: the model's with the cache's grouping, and the training's
    (default ``TrainConfig()``)."""
    from tractvq.models.config import ModelConfig

    if model_config is None:
        raise ValueError("a new run needs a model_config")
    if not isinstance(model_config, ModelConfig):
        raise ValueError(f"model_config must be a ModelConfig, got {type(model_config).__name__}")
    return _with_grouping(model_config, cache, cache_path), train_config or TrainConfig()


def _with_grouping(model_config, cache, cache_path):
    """The model config with the cache's preprocessing (which the model will see)."""
    try:
        return replace(model_config, grouping=cache.settings)
    except ValueError as error:
        raise RunConfigError(cache_path, f"the model cannot take this cache's groups: {error}") from None


def _check_batch_size(config: TrainConfig, cache, cache_path, processes: Processes) -> None:
    """Refuse a batch size the processes cannot share evenly or the training split cannot fill."""
    if config.batch_size % processes.world_size:
        raise RunConfigError(
            None,
            f"the batch size must be divisible by the number of processes, got {config.batch_size}"
            f" for {processes.world_size}",
        )
    training_groups = int(np.count_nonzero(~cache.validation))
    if config.batch_size > training_groups:  # a batch is drawn in full: it would repeat groups
        raise RunConfigError(
            cache_path,
            f"the batch size {config.batch_size} is more than the {training_groups} groups of the"
            " training split; give at most that (--batch)",
        )


def _check_optimizer_state(optimizer) -> None:
    """Raise ValueError unless each loaded optimizer state tensor has its parameter's shape."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if name != "step" and (not isinstance(value, torch.Tensor) or value.shape != parameter.shape):
                    raise ValueError(f"optimizer state {name!r} does not fit its parameter {tuple(parameter.shape)}")


class _Trainer:
    """One session of a run, once everything is checked and built: the data, the model, its
    optimizer and schedule, and the progress a checkpoint keeps (``step``, ``elapsed``, the
    training-loss ``sums`` and ``count`` since the last metrics row, the metrics ``rows``)."""

    def __init__(self, cache, cache_path, run_dir, model, model_config, config, processes, device, payload):
        from tractvq.models.basis import fit_bases

        self.cache, self.cache_path, self.run_dir = cache, cache_path, run_dir
        self.model, self.model_config, self.config = model, model_config, config
        self.processes, self.device = processes, device
        train_groups = cache.split("train")
        validation_groups = cache.split("validation")
        self.dataset = GroupDataset(train_groups, config.augmentation, seed=config.seed)
        if payload is None and model_config.preset == "basis":  # resumed runs have theirs in the state dict
            fit_bases(model, train_groups.data, train_groups.mask)
        self.validation = GroupDataset(validation_groups) if len(validation_groups) else None
        if self.validation is None and processes.main:
            warnings.warn(f"{cache_path}: the cache has no validation groups; validation metrics stay empty", stacklevel=3)
        self.sampler = StepSampler(
            len(self.dataset), config.batch_size, seed=config.seed, rank=processes.rank, world_size=processes.world_size,
            labels=cache.bundle_labels[~cache.validation] if config.balance_bundles else None,
        )
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
            fused=device.type in ("cpu", "cuda"),  # one kernel for all parameters
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, LearningRateSchedule(config))
        self.step, self.elapsed, self.sums, self.count, self.rows = 0, 0.0, {}, 0, []
        if payload is None:
            torch.manual_seed(rank_seed(config.seed, processes.rank))
        else:
            self._restore(payload)
        self.trained = self._wrapped(model)

    def _restore(self, payload: dict) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, random states, progress."""
        processes = self.processes
        states = payload["rng"]
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            _check_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(payload["scheduler"])  # keeps the schedule, from the config
            if len(states) == processes.world_size:
                set_rng_state(states[processes.rank], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise ModelError(
                self.run_dir / "checkpoint.pt", f"cannot resume from it ({type(error).__name__}: {first_line})"
            ) from None
        self.step, self.elapsed = payload["step"], float(payload["elapsed_s"])
        self.sums, self.count = dict(payload["train_sums"]), payload["train_count"]
        if len(states) != processes.world_size:
            warnings.warn(
                f"the checkpoint was written by {len(states)} processes, this run has {processes.world_size}:"
                " the quantizers' random streams restart (batches are unchanged)",
                stacklevel=4,
            )
            torch.manual_seed(rank_seed(self.config.seed + self.step, processes.rank))
        self.rows = read_metrics(self.run_dir, self.step) if processes.main else []

    def _wrapped(self, model):
        """What the training forward runs: the model, in DDP over several processes, compiled
        if asked."""
        trained = model
        if self.processes.distributed:
            from torch.nn.parallel import DistributedDataParallel

            trained = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # every registered bottleneck uses all its parameters in each step (checked in the
                # tests); a new one that does not makes DDP fail with a message naming this flag
                find_unused_parameters=False,
            )
        if self.config.compile:
            trained = torch.compile(trained)
        return trained

    def run(self, *, progress: bool, callback) -> dict:
        """Train to ``config.steps``; the last metrics row (see :func:`train`)."""
        from tqdm.auto import tqdm

        config, processes = self.config, self.processes
        bar = tqdm(
            total=config.steps, initial=self.step, desc="training", unit="step",
            disable=not progress or not processes.main, dynamic_ncols=True,
        )
        in_step = False  # between steps the state is consistent and can be saved
        stop = _StopFlag()
        try:
            with stop:
                self.model.train()
                while self.step < config.steps:
                    if agree(stop.raised, processes, self.device):
                        raise KeyboardInterrupt
                    began = time.perf_counter()
                    in_step = True
                    parts = self._train_step()
                    self.elapsed += time.perf_counter() - began
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['loss']:.4g}", refresh=False)
                    if self.step % config.validate_every == 0 or self.step == config.steps:
                        self.rows.append(self._metrics_row())
                        if processes.main:
                            write_metrics(self.run_dir, self.rows)
                    if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                        self._checkpoint()
                    in_step = False
                    if callback is not None:
                        callback(self.step, parts)
        except KeyboardInterrupt:
            bar.close()
            if in_step or (processes.distributed and not stop.raised):
                # mid-step (a second Ctrl-C: the forward may have changed buffers and random
                # states already), or one rank alone: no consistent state to save
                raise TrainingInterrupted(self.step, None) from None
            path = self._checkpoint()
            if processes.main:
                plot_curves(self.run_dir, self.rows)
            raise TrainingInterrupted(self.step, path) from None
        bar.close()
        return self._finish()

    def _train_step(self) -> dict:
        """One optimizer step on this rank's slice of the step's batch; its loss parts."""
        model, config = self.model, self.config
        if hasattr(model.quantizer, "set_step"):
            model.quantizer.set_step(self.step)  # annealed Gumbel temperatures
        indices, positions = self.sampler.indices(self.step), self.sampler.positions(self.step)
        batch = self.dataset.batch(indices, positions).to(self.device, non_blocking=True)
        output = self.trained(batch)
        loss, parts = model.loss(batch, output)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        broadcast_parameters(model.quantizer, self.processes)  # in-place codebook edits differ by rank
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1
        self.step += 1
        return parts

    def _metrics_row(self) -> dict:
        """The metrics row of the current step (validation on rank 0); starts the next
        training-loss means."""
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[key] for key in keys] + [self.count], dtype=torch.float64)
        totals = summed(totals, self.processes, self.device)
        means = {f"train_{key}": float(value) / max(float(totals[-1]), 1) for key, value in zip(keys, totals[:-1])}
        self.sums, self.count = {}, 0
        row = {"step": self.step, "epoch": self.sampler.epoch(self.step), "lr": self.scheduler.get_last_lr()[0]}
        row |= means
        if self.processes.main:
            row |= {key: None for key in METRIC_COLUMNS if key.startswith("val_")}
            if self.validation is not None:
                row |= validate(self.model, self.validation, self.config.batch_size, self.device, self.config.seed)
        row["elapsed_s"] = self.elapsed
        return row

    def _checkpoint(self) -> Path:
        """Write ``checkpoint.pt`` and the metrics (rank 0) with every rank's random states."""
        states = gathered_rng_states(self.processes, self.device)
        path = self.run_dir / "checkpoint.pt"
        if self.processes.main:
            write_checkpoint(path, {
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                # the schedule itself is rebuilt from the config: only its position is state
                "scheduler": {**self.scheduler.state_dict(), "lr_lambdas": [None]},
                "rng": states,
                "train_sums": dict(self.sums),
                "train_count": self.count,
                "elapsed_s": self.elapsed,
                "model_config": self.model_config.to_dict(),
                "train_config": self.config.to_dict(),
                "world_size": self.processes.world_size,
                "cache": {
                    "path": os.fspath(self.cache_path),
                    "groups": len(self.cache.groups),
                    "settings": asdict(self.cache.settings),
                },
            })
            write_metrics(self.run_dir, self.rows)
        barrier(self.processes)
        return path

    def _finish(self) -> dict:
        """Write the last metrics, the curves and ``model.pt``; the last metrics row."""
        from tractvq.models.checkpoint import save_model

        if not self.rows or self.rows[-1]["step"] != self.step:  # a resumed run that had already finished
            self.rows.append(self._metrics_row())
        final = self.rows[-1]
        if self.processes.main:
            write_metrics(self.run_dir, self.rows)
            plot_curves(self.run_dir, self.rows)
            save_model(self.model, self.run_dir / "model.pt", force=True, extra={"step": self.step, "metrics": final})
        barrier(self.processes)
        return dict(final)


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
