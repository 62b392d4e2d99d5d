"""Training batches: the groups of a cache split as tensors, a step-seeded sampler, and
augmentation that keeps the anatomy.

Batches are a pure function of ``(seed, step)``: :class:`StepSampler` lays the groups out as
an endless stream of seeded permutations (one per epoch) and step ``t`` takes positions
``t * B`` to ``(t + 1) * B`` of it. Resuming at step ``t`` therefore gives exactly the
batches an uninterrupted run would have seen, with no sampler state to save; under
``torch.distributed`` each rank takes its contiguous slice of the same global batch.
Augmentation draws each item's parameters from its own generator seeded by
``(seed, stream position)``, so an item is augmented the same way whatever the batch size
split across ranks. Nothing here touches a global random state.

Augmentation (:class:`Augmentation`, off by default) does only what a real group could also
look like:

``streamline_dropout``
    Each row of a group is dropped with this probability (at least one row stays) and
    replaced by a copy of the nearest kept row in the group's row order. The result is a
    group of a sparser bundle, made the way the cache itself completes a bundle's last group
    (by repeating streamlines): every row is still a real streamline, unchanged, and the
    rows keep their order (with grouping ``order=True`` neighbouring rows are neighbouring
    streamlines, so a dropped row is replaced by a similar one). Resampling rows with
    replacement, mixing groups or jittering points would create streamlines or groups that
    do not exist.
``rotation_degrees``
    A rotation by an angle uniform in ``[0, rotation_degrees]`` about a uniformly random axis
    through the group's centroid, in millimetres: a small change of head pose (a few
    degrees, well inside the spread of registration to a template).
``translation_mm``
    A shift uniform in ``[-translation_mm, translation_mm]`` per axis, in millimetres. With
    per-group normalisation (the default) the centroid is removed again, so the shift has
    no effect; it matters for the global normalisation of the published model.

After the rigid transform the group is normalised again as the cache was
(:class:`~tractvq.bundles.GroupingSettings.normalization`): per-group centroid and largest
deviation (``group``), or the group's fixed offset and scale (``global``, ``none``).
Validation batches are never augmented.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from tractvq.bundles import GroupedBundles

__all__ = ["Augmentation", "GroupDataset", "StepSampler"]

# Domain tags that keep the sampler's and the augmentation's random streams apart.
_SAMPLING_STREAM = 0
_AUGMENTATION_STREAM = 1


@dataclass(frozen=True)
class Augmentation:
    """Anatomy-preserving augmentation of training groups (all off by default).

    Parameters
    ----------
    rotation_degrees : float
        Largest rotation angle about the group centroid, in degrees (e.g. 5).
    translation_mm : float
        Largest shift per axis, in millimetres (no effect with per-group normalisation).
    streamline_dropout : float
        Probability, in [0, 1), that a row is replaced by a copy of its nearest kept row.
    """

    rotation_degrees: float = 0.0
    translation_mm: float = 0.0
    streamline_dropout: float = 0.0

    def __post_init__(self):
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees!r}")
        if not 0 <= self.translation_mm < math.inf:
            raise ValueError(f"translation_mm must be finite and >= 0, got {self.translation_mm!r}")
        if not 0 <= self.streamline_dropout < 1:
            raise ValueError(f"streamline_dropout must be in [0, 1), got {self.streamline_dropout!r}")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on."""
        return bool(self.rotation_degrees or self.translation_mm or self.streamline_dropout)

    def to_dict(self) -> dict:
        """The options as a plain dictionary (for JSON and checkpoints)."""
        return asdict(self)


def _rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix (3, 3) of ``angle`` radians about the unit vector ``axis``."""
    x, y, z = axis
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _nearest_kept_rows(keep: np.ndarray) -> np.ndarray:
    """For each row, the index of the nearest kept row (the earlier one on a tie)."""
    kept = np.flatnonzero(keep)
    rows = np.arange(len(keep))
    return kept[np.abs(rows[:, None] - kept[None, :]).argmin(axis=1)]


class GroupDataset(torch.utils.data.Dataset):
    """The groups of a cache split as a float32 tensor, with optional augmentation.

    ``dataset[i]`` is group ``i`` as stored ``(3, S, P)``; :meth:`batch` stacks groups and
    augments them.

    Parameters
    ----------
    groups : GroupedBundles
        A split of a training cache (:meth:`tractvq.cache.TrainingCache.split`).
    augmentation : Augmentation, optional
        Applied by :meth:`batch` when it is given keys.
    seed : int, optional
        Seed of the augmentation.
    """

    def __init__(self, groups: GroupedBundles, augmentation: Augmentation | None = None, *, seed: int = 0):
        if len(groups) == 0:
            raise ValueError("the split has no groups")
        self.groups = groups
        self.augmentation = augmentation or Augmentation()
        self.seed = int(seed)
        self.data = torch.from_numpy(np.ascontiguousarray(groups.data, dtype=np.float32))  # (G, 3, S, P)
        # "global" and "none" map mm to model units with fixed numbers; "group" refits per group
        self.per_group_normalization = groups.settings.normalization == "group"

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index]

    def batch(self, indices: np.ndarray, keys: np.ndarray | None = None) -> Tensor:
        """Stack groups, augmented when ``keys`` are given and augmentation is on.

        Parameters
        ----------
        indices : ndarray of int, shape (B,)
            Groups to take.
        keys : ndarray of int, shape (B,), optional
            One key per item (its stream position, see :class:`StepSampler`): item ``j`` is
            augmented with a generator seeded by ``(seed, keys[j])``.

        Returns
        -------
        Tensor, shape (B, 3, S, P), float32
        """
        indices = np.asarray(indices, dtype=np.int64)
        batch = self.data[torch.from_numpy(indices)]  # (B, 3, S, P), a copy
        if keys is None or not self.augmentation.enabled:
            return batch
        keys = np.asarray(keys, dtype=np.int64)
        if keys.shape != indices.shape:
            raise ValueError(f"need one key per index, got {keys.shape} keys for {indices.shape} indices")
        return self._augment(batch, indices, keys)

    def _augment(self, batch: Tensor, indices: np.ndarray, keys: np.ndarray) -> Tensor:
        options = self.augmentation
        count, _, size, _ = batch.shape
        rows = np.empty((count, size), dtype=np.int64)
        rotations = np.empty((count, 3, 3))
        shifts = np.empty((count, 3))
        for item, key in enumerate(keys):
            rng = np.random.default_rng((self.seed, _AUGMENTATION_STREAM, int(key)))
            keep = rng.random(size) >= options.streamline_dropout
            if not keep.any():
                keep[rng.integers(size)] = True
            rows[item] = _nearest_kept_rows(keep)
            axis = rng.normal(size=3)
            axis /= max(np.linalg.norm(axis), 1e-12)
            rotations[item] = _rotation_matrix(axis, math.radians(options.rotation_degrees) * rng.random())
            shifts[item] = rng.uniform(-options.translation_mm, options.translation_mm, size=3)
        batch = torch.take_along_dim(batch, torch.from_numpy(rows)[:, None, :, None], dim=2)  # (B, 3, S, P)
        if not (options.rotation_degrees or options.translation_mm) and not self.per_group_normalization:
            return batch
        scale = torch.from_numpy(self.groups.scale[indices])[:, None, None]  # (B, 1, 1) float64
        offset = torch.from_numpy(self.groups.offset[indices])[:, :, None]  # (B, 3, 1)
        points = batch.reshape(count, 3, -1).double() * scale + offset  # (B, 3, S*P) mm
        centre = points.mean(dim=2, keepdim=True)  # (B, 3, 1)
        points = torch.from_numpy(rotations) @ (points - centre) + centre + torch.from_numpy(shifts)[:, :, None]
        if self.per_group_normalization:
            # the cache's per-group normalisation: centroid, largest per-axis deviation
            offset = points.mean(dim=2, keepdim=True)
            deviation = (points - offset).abs().amax(dim=(1, 2))  # (B,)
            scale = deviation.clamp_min(torch.finfo(torch.float32).tiny)[:, None, None]
        return ((points - offset) / scale).float().reshape(batch.shape)


class StepSampler:
    """Which groups each training step sees: a pure function of ``(seed, step)``.

    The groups form an endless stream of permutations, one per epoch, each seeded by
    ``(seed, epoch)``; the global batch of step ``t`` is stream positions
    ``[t * B, (t + 1) * B)``, of which rank ``r`` of ``W`` takes the ``r``-th contiguous
    slice of ``B / W``.

    Parameters
    ----------
    n_items : int
        Number of groups.
    batch_size : int
        Global batch size B (over all ranks).
    seed : int
        Seed of the permutations.
    rank, world_size : int, optional
        This process's rank and the number of processes; B must be divisible by it.
    """

    def __init__(self, n_items: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank!r} of {world_size!r}")
        if batch_size % world_size:
            raise ValueError(
                f"the batch size must be divisible by the number of processes, got {batch_size} for {world_size}"
            )
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.local_batch_size = self.batch_size // world_size
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._permutations: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the groups in ``epoch``."""
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng((self.seed, _SAMPLING_STREAM, int(epoch)))
            self._permutations[epoch] = rng.permutation(self.n_items)
        return self._permutations[epoch]

    def positions(self, step: int) -> np.ndarray:
        """This rank's stream positions at ``step``, shape (B / W,)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        start = step * self.batch_size + self.rank * self.local_batch_size
        return np.arange(start, start + self.local_batch_size, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        """This rank's group indices at ``step``, shape (B / W,)."""
        positions = self.positions(step)
        epochs, within = np.divmod(positions, self.n_items)
        return np.array([self.permutation(int(epoch))[offset] for epoch, offset in zip(epochs, within)], dtype=np.int64)

    def epoch(self, step: int) -> float:
        """Epochs completed at the start of ``step`` (fractional)."""
        return step * self.batch_size / self.n_items
