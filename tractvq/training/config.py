"""What a training run is asked to do: :class:`TrainConfig`, its learning-rate schedule, and
which of its fields a resumed run may change."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from tractvq._config import check_integer, dataclass_from_dict
from tractvq.data import Augmentation
from tractvq.errors import TractvqError

__all__ = [
    "DEVICES",
    "LR_SCHEDULES",
    "RESUMABLE_FIELDS",
    "LearningRateSchedule",
    "RunConfigError",
    "TrainConfig",
    "resumed_config",
]

LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: Fields of a :class:`TrainConfig` that a resumed run may change.
RESUMABLE_FIELDS = ("steps", "validate_every", "checkpoint_every", "device", "num_threads", "compile")


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
        Augmentation of the training groups (:mod:`tractvq.data`); off by default. A mapping
        of its fields is taken too.
    device : {"auto", "cpu", "cuda"}
        Where to train: ``auto`` takes CUDA when available.
    num_threads : int or None
        CPU threads of torch (:func:`torch.set_num_threads`); None leaves torch's default.
    balance_bundles : bool
        Draw the training groups so that every bundle type of the cache is seen equally
        often (:class:`~tractvq.data.StepSampler` with the groups' bundle labels), however
        many groups it has (54 to 11,476 streamlines per bundle in the HCP atlases).
    compile : bool
        Run the training forward through :func:`torch.compile` (inductor; needs a C++
        compiler on the CPU). A one-off compile of tens of seconds for about 20% faster
        ``paper`` steps on the CPU (``benchmarks/bench_train.py``); validation stays eager.

    Raises
    ------
    ValueError
        If a value is invalid (the message names it).
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
    balance_bundles: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "validate_every", "checkpoint_every"):
            check_integer(name, getattr(self, name), minimum=1)
        check_integer("warmup_steps", self.warmup_steps, minimum=0)
        check_integer("seed", self.seed, minimum=0)
        if self.num_threads is not None:
            check_integer("num_threads", self.num_threads, minimum=1)
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
            augmentation = dataclass_from_dict(Augmentation, self.augmentation, name="augmentation")
            object.__setattr__(self, "augmentation", augmentation)
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
            If ``data`` is not a mapping, has a key that is no field, or a value is invalid.
        """
        return dataclass_from_dict(cls, data, name="training config")


class RunConfigError(TractvqError):
    """A run cannot start as asked: the configs disagree with the checkpoint, the cache or
    the processes and devices at hand."""


class LearningRateSchedule:
    """Multiplier of the peak learning rate at a step: linear warm-up, then cosine or constant.

    Parameters
    ----------
    config : TrainConfig
        Its ``lr_schedule``, ``warmup_steps``, ``steps`` and ``final_lr_fraction``.
    """

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


def resumed_config(run_dir: str | os.PathLike, saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    """The config a resumed run goes on with: ``given``, or ``saved`` when None.

    Raises
    ------
    RunConfigError
        Naming ``run_dir``, if ``given`` differs from ``saved`` in a field that is not one of
        :data:`RESUMABLE_FIELDS`.
    """
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
