"""Training batches: the groups of a cache split as tensors, a step-seeded sampler, and
augmentation that stands in for other subjects and tractography settings.

Batches are a pure function of ``(seed, step)``: :class:`StepSampler` lays the groups out as
an endless stream of seeded permutations (one per epoch) and step ``t`` takes positions
``t * B`` to ``(t + 1) * B`` of it. Resuming at step ``t`` therefore gives exactly the
batches an uninterrupted run would have seen, with no sampler state to save; under
``torch.distributed`` each rank takes its contiguous slice of the same global batch.
Augmentation draws each item's parameters from its own generator seeded by
``(seed, stream position)``, so an item is augmented the same way whatever the batch size
split across ranks. Nothing here touches a global random state.

Augmentation (:class:`Augmentation`, every option off by default) stands in for what other
subjects, scanners and tractography settings would give; each option makes groups that a
real dataset could hold:

``streamline_dropout``
    Each row of a group is dropped with this probability (at least one row stays) and
    replaced by a copy of the nearest kept row in the group's row order. The result is a
    group of a sparser bundle, made the way the cache itself completes a bundle's last group
    (by repeating streamlines): every row is still a real streamline, and the rows keep
    their order (with grouping ``order=True`` neighbouring rows are neighbouring
    streamlines, so a dropped row is replaced by a similar one, and a repeated streamline
    sits next to its copy, as the canonical order puts it).
``partial_groups``
    With this probability, a group keeps only ``k`` of its ``S`` rows, ``k`` uniform in
    ``[1, S - 1]``, the others replaced as for dropout: the last, incomplete group of a
    bundle, or a whole bundle of fewer than ``S`` streamlines (bundles range from tens to
    thousands of streamlines).
``mixed_groups``
    With this probability, a group is made of ``S`` streamlines drawn uniformly from all
    the split's streamlines (rows that are not repeats): a group of unrelated streamlines,
    as a random grouping of a whole-brain tractogram gives.
``resampling``
    With this probability, every streamline of a group is resampled to ``P'`` points equally
    spaced along it, ``P'`` uniform in ``[ceil(P / 2), 2 P]``, and back to ``P`` (DIPY's
    ``set_number_of_points``): the corners a coarser (or finer) tracking step or a
    compressed file would have cut, seen after the cache's resampling.
``rotation_degrees``
    A rotation by an angle uniform in ``[0, rotation_degrees]`` about a uniformly random axis
    through the group's centroid, in millimetres: a small change of head pose (a few
    degrees, well inside the spread of registration to a template).
``scaling``, ``shear``
    An affine map about the centroid: each axis scaled by a factor uniform in
    ``[1 - scaling, 1 + scaling]``, then sheared by a matrix whose six off-diagonal entries
    are uniform in ``[-shear, shear]``, before the rotation: head size and shape.
``translation_mm``
    A shift uniform in ``[-translation_mm, translation_mm]`` per axis, in millimetres. With
    per-group normalisation (the default) the centroid is removed again, so the shift has
    no effect; it matters for the global normalisation of the published model.
``elastic_mm``
    A smooth warp: the displacement field is a sum of :data:`ELASTIC_BUMPS` Gaussian bumps
    of width :data:`ELASTIC_WIDTH_MM`, centred on random points of the group, with random
    directions, scaled so that the largest displacement of the group's points is
    ``elastic_mm``: anatomy that differs between subjects, beyond an affine map.
``jitter_mm``
    Independent Gaussian noise of this standard deviation on every coordinate of every
    point, in millimetres: the noise of tracking.

The row options (dropout, partial and mixed groups) apply first, then resampling, the
affine map (scaling, shear, rotation, translation), the warp and the jitter, all in
millimetres (each group's ``scale`` and ``offset``); then the group is normalised again as
the cache was (:class:`~tractvq.bundles.GroupingSettings.normalization`): per-group centroid
and largest deviation (``group``), or the group's fixed offset and scale (``global``,
``none``). Every item draws every option's parameters, in a fixed order, whether the option
is on or not (the jitter's noise, drawn only when it is on, comes last), so turning one
option on does not change what the others draw. Validation batches are never augmented.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from tractvq.bundles import GroupedBundles

__all__ = ["ELASTIC_BUMPS", "ELASTIC_WIDTH_MM", "Augmentation", "GroupDataset", "StepSampler"]

# Domain tags that keep the sampler's and the augmentation's random streams apart.
_SAMPLING_STREAM = 0
_AUGMENTATION_STREAM = 1


@dataclass(frozen=True)
class Augmentation:
    """Augmentation of training groups (all off by default; see the module for what each does).

    Parameters
    ----------
    rotation_degrees : float
        Largest rotation angle about the group centroid, in degrees (e.g. 5).
    translation_mm : float
        Largest shift per axis, in millimetres (no effect with per-group normalisation).
    streamline_dropout : float
        Probability, in [0, 1), that a row is replaced by a copy of its nearest kept row.
    scaling : float
        Largest relative change of scale per axis, in [0, 1) (e.g. 0.1: factors 0.9 to 1.1).
    shear : float
        Largest off-diagonal entry of the shear matrix, in [0, 1) (the tangent of the shear
        angle; e.g. 0.05).
    elastic_mm : float
        Largest displacement of the smooth warp, in millimetres (e.g. 2).
    jitter_mm : float
        Standard deviation of the noise on every coordinate, in millimetres (e.g. 0.2).
    resampling : float
        Probability, in [0, 1], that a group is resampled through ``P'`` points per streamline.
    partial_groups : float
        Probability, in [0, 1], that a group keeps fewer than ``S`` distinct rows.
    mixed_groups : float
        Probability, in [0, 1], that a group is made of unrelated streamlines of the split.
    """

    rotation_degrees: float = 0.0
    translation_mm: float = 0.0
    streamline_dropout: float = 0.0
    scaling: float = 0.0
    shear: float = 0.0
    elastic_mm: float = 0.0
    jitter_mm: float = 0.0
    resampling: float = 0.0
    partial_groups: float = 0.0
    mixed_groups: float = 0.0

    def __post_init__(self):
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees!r}")
        for name in ("translation_mm", "elastic_mm", "jitter_mm"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")
        for name in ("streamline_dropout", "scaling", "shear"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("resampling", "partial_groups", "mixed_groups"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on."""
        return any(self.to_dict().values())

    @property
    def moves_points(self) -> bool:
        """Whether any option changes coordinates (not only which rows a group holds)."""
        return bool(
            self.rotation_degrees or self.translation_mm or self.scaling or self.shear or self.elastic_mm
            or self.jitter_mm or self.resampling
        )

    def to_dict(self) -> dict:
        """The options as a plain dictionary (for JSON and checkpoints)."""
        return asdict(self)


#: Gaussian bumps of the elastic warp, and their width (standard deviation) in millimetres:
#: smooth over a few centimetres, the scale at which anatomy differs between subjects.
ELASTIC_BUMPS = 4
ELASTIC_WIDTH_MM = 20.0


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


def _resample_through(streamlines: np.ndarray, count: int) -> np.ndarray:
    """Streamlines ``(S, P, 3)`` resampled to ``count`` points along them and back to ``P``."""
    from dipy.tracking.streamline import set_number_of_points

    through = set_number_of_points(list(streamlines), nb_points=count)
    return np.asarray(set_number_of_points(through, nb_points=streamlines.shape[1]))


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
        self.real_rows = np.flatnonzero(groups.mask)  # rows that are not repeats, as indices into (G, S)

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
        if keys is None or not self.augmentation.enabled:
            return self.data[torch.from_numpy(indices)]  # (B, 3, S, P), a copy
        keys = np.asarray(keys, dtype=np.int64)
        if keys.shape != indices.shape:
            raise ValueError(f"need one key per index, got {keys.shape} keys for {indices.shape} indices")
        return self._augment(indices, keys)

    def _augment(self, indices: np.ndarray, keys: np.ndarray) -> Tensor:
        options = self.augmentation
        draws = [
            self._draw(np.random.default_rng((self.seed, _AUGMENTATION_STREAM, int(key))), int(index))
            for index, key in zip(indices, keys)
        ]
        sources = torch.from_numpy(np.stack([draw.groups for draw in draws]))  # (B, S)
        rows = torch.from_numpy(np.stack([draw.rows for draw in draws]))  # (B, S)
        batch = self.data[sources, :, rows].permute(0, 2, 1, 3)  # (B, 3, S, P)
        if not (options.moves_points or options.mixed_groups or self.per_group_normalization):
            return batch.contiguous()  # rows of the item's own group, in its fixed units: exact copies
        scale = torch.from_numpy(self.groups.scale)[sources][:, None, :, None]  # (B, 1, S, 1) float64
        offset = torch.from_numpy(self.groups.offset)[sources].permute(0, 2, 1)[..., None]  # (B, 3, S, 1)
        points = batch.double() * scale + offset  # (B, 3, S, P) mm
        for item, draw in enumerate(draws):
            if draw.through:
                streamlines = np.ascontiguousarray(points[item].permute(1, 2, 0).numpy())  # (S, P, 3)
                points[item] = torch.from_numpy(_resample_through(streamlines, draw.through)).permute(2, 0, 1)
        points = points.reshape(len(draws), 3, -1)  # (B, 3, S*P)
        centre = points.mean(dim=2, keepdim=True)  # (B, 3, 1)
        linear = torch.from_numpy(np.stack([draw.linear for draw in draws]))  # (B, 3, 3)
        shift = torch.from_numpy(np.stack([draw.shift for draw in draws]))[:, :, None]  # (B, 3, 1)
        points = linear @ (points - centre) + centre + shift
        if options.elastic_mm:
            points = points + _elastic_displacement(points, draws, options.elastic_mm)
        if options.jitter_mm:
            points = points + options.jitter_mm * torch.from_numpy(np.stack([draw.noise for draw in draws]))
        if self.per_group_normalization:
            # the cache's per-group normalisation: centroid, largest per-axis deviation
            offset = points.mean(dim=2, keepdim=True)
            deviation = (points - offset).abs().amax(dim=(1, 2))  # (B,)
            scale = deviation.clamp_min(torch.finfo(torch.float32).tiny)[:, None, None]
        else:  # the item's own group's fixed units
            scale = torch.from_numpy(self.groups.scale[indices])[:, None, None]  # (B, 1, 1)
            offset = torch.from_numpy(self.groups.offset[indices])[:, :, None]  # (B, 3, 1)
        return ((points - offset) / scale).float().reshape(batch.shape)

    def _draw(self, rng: np.random.Generator, index: int) -> _Draw:
        """One item's random parameters (every option's, in a fixed order: see the module)."""
        options = self.augmentation
        _, _, size, n_points = self.data.shape
        keep = rng.random(size) >= options.streamline_dropout
        order = rng.permutation(size)
        kept_count = rng.integers(1, max(size, 2))  # [1, S - 1]
        if rng.random() < options.partial_groups:
            keep[order[kept_count:]] = False
        if not keep.any():
            keep[order[0]] = True
        picks = self.real_rows[rng.integers(len(self.real_rows), size=size)]  # (S,) into (G, S)
        if rng.random() < options.mixed_groups:
            groups, rows = np.divmod(picks, size)
        else:
            groups, rows = np.full(size, index), np.arange(size)
        layout = _nearest_kept_rows(keep)
        through = int(rng.integers(-(-n_points // 2), 2 * n_points + 1))
        if rng.random() >= options.resampling:
            through = 0
        axis = rng.normal(size=3)
        axis /= max(np.linalg.norm(axis), 1e-12)
        rotation = _rotation_matrix(axis, math.radians(options.rotation_degrees) * rng.random())
        shear = np.eye(3)
        shear[~np.eye(3, dtype=bool)] = options.shear * rng.uniform(-1, 1, size=6)
        scaling = np.diag(1 + options.scaling * rng.uniform(-1, 1, size=3))
        return _Draw(
            groups=groups[layout],
            rows=rows[layout],
            through=through,
            linear=rotation @ shear @ scaling,
            shift=options.translation_mm * rng.uniform(-1, 1, size=3),
            centres=rng.integers(size * n_points, size=ELASTIC_BUMPS),
            bumps=rng.normal(size=(ELASTIC_BUMPS, 3)),
            noise=rng.normal(size=(3, size * n_points)) if options.jitter_mm else None,
        )


class _Draw(NamedTuple):
    """One item's augmentation parameters (:meth:`GroupDataset._draw`)."""

    groups: np.ndarray  # (S,) the group each row is taken from
    rows: np.ndarray  # (S,) the row of that group
    through: int  # points to resample each streamline through; 0: none
    linear: np.ndarray  # (3, 3) rotation @ shear @ scaling, about the centroid
    shift: np.ndarray  # (3,) mm
    centres: np.ndarray  # (K,) the elastic bumps' centres, as indices of the group's S*P points
    bumps: np.ndarray  # (K, 3) the bumps' displacement directions
    noise: np.ndarray | None  # (3, S*P) standard normal jitter, when it is on


def _elastic_displacement(points: Tensor, draws: list[_Draw], largest_mm: float) -> Tensor:
    """The smooth warp of each group ``(B, 3, N)`` in mm: a sum of Gaussian bumps, scaled so
    that the largest displacement of the group's points is ``largest_mm``."""
    centres = torch.from_numpy(np.stack([draw.centres for draw in draws]))  # (B, K)
    bumps = torch.from_numpy(np.stack([draw.bumps for draw in draws]))  # (B, K, 3)
    centre_points = torch.take_along_dim(points, centres[:, None, :], dim=2)  # (B, 3, K)
    distances = torch.cdist(points.transpose(1, 2), centre_points.transpose(1, 2))  # (B, N, K)
    weights = torch.exp(-(distances**2) / (2 * ELASTIC_WIDTH_MM**2))
    field = torch.einsum("bnk,bkc->bcn", weights, bumps)  # (B, 3, N)
    largest = field.norm(dim=1).amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)  # (B,)
    return field * (largest_mm / largest)[:, None, None]


class StepSampler:
    """Which groups each training step sees: a pure function of ``(seed, step)``.

    The groups form an endless stream of permutations, one per epoch, each seeded by
    ``(seed, epoch)``; the global batch of step ``t`` is stream positions
    ``[t * B, (t + 1) * B)``, of which rank ``r`` of ``W`` takes the ``r``-th contiguous
    slice of ``B / W``. With ``labels`` (e.g. each group's bundle type), an epoch is instead
    ``n_items`` draws that each pick a label uniformly and then one of its groups uniformly
    (with replacement): every bundle type is seen equally often, however many groups it has.

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
    labels : ndarray, shape (n_items,), optional
        Balance the draws over these labels (see above).
    """

    def __init__(
        self, n_items: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, labels=None
    ):
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
        self._members = None
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (self.n_items,):
                raise ValueError(f"labels must have shape ({self.n_items},), got {labels.shape}")
            _, label_index = np.unique(labels, return_inverse=True)
            counts = np.bincount(label_index)
            # the groups of each label, one label after the other, and where each label starts
            self._members = (np.argsort(label_index, kind="stable"), np.cumsum(counts) - counts, counts)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the groups in ``epoch``."""
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng((self.seed, _SAMPLING_STREAM, int(epoch)))
            if self._members is None:
                self._permutations[epoch] = rng.permutation(self.n_items)
            else:
                members, starts, counts = self._members
                chosen = rng.integers(0, len(counts), self.n_items)  # a label per draw, uniformly
                within = (rng.random(self.n_items) * counts[chosen]).astype(np.int64)
                self._permutations[epoch] = members[starts[chosen] + within]
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
