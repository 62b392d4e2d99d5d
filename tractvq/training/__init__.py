"""Training a bundle autoencoder on a training cache, resumable exactly, on one or many
processes.

:func:`~tractvq.training.loop.train` runs the loop. The modules, one responsibility each:

- :mod:`tractvq.training.config`: :class:`~tractvq.training.config.TrainConfig`, the
  learning-rate schedule, what a resumed run may change;
- :mod:`tractvq.training.run_folder`: the run folder's files (checkpoint, model, metrics,
  curves, configs) and the checks of a checkpoint before a run resumes from it;
- :mod:`tractvq.training.processes`: the processes and devices (``torchrun``, DDP) and the
  random states of each rank;
- :mod:`tractvq.training.validation`: the metrics of the validation split;
- :mod:`tractvq.training.loop`: :func:`~tractvq.training.loop.train` and
  :class:`~tractvq.training.loop.TrainingInterrupted`.

The package re-exports the names below.
"""

from tractvq.training.config import (
    DEVICES,
    LR_SCHEDULES,
    RESUMABLE_FIELDS,
    RunConfigError,
    TrainConfig,
)
from tractvq.training.loop import TrainingInterrupted, train
from tractvq.training.processes import resolve_device
from tractvq.training.run_folder import METRIC_COLUMNS, RUN_FILES, read_run_configs

__all__ = [
    "DEVICES",
    "LR_SCHEDULES",
    "METRIC_COLUMNS",
    "RESUMABLE_FIELDS",
    "RUN_FILES",
    "RunConfigError",
    "TrainConfig",
    "TrainingInterrupted",
    "read_run_configs",
    "resolve_device",
    "train",
]
