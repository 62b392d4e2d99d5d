"""From streamlines to bundle tensors ``(G, 3, S, P)`` and back, exactly.

One data point of a tractvq model is a *group* of ``S`` streamlines of ``P`` points each,
laid out as a 3-channel image ``(3, S, P)``. This module turns a tractogram into such groups
and records everything needed to turn (decoded) groups back into the input streamlines:

1. :func:`resample` -- every streamline to ``P`` points with DIPY's
   :func:`~dipy.tracking.streamline.set_number_of_points`, after checking that each has at
   least two distinct, finite points.
2. Grouping (:class:`GroupingSettings.strategy`): ``sequential`` (file order), ``random``
   (seeded permutation) or ``spatial`` (balanced recursive bisection of the streamlines along
   their principal direction of variation, so each group holds neighbouring streamlines).
   A bundle whose size is not a multiple of ``S`` is completed by repeating streamlines of
   its last group; a mask marks the one copy of each streamline that decoding returns.
3. Canonical orientation: within a group, streamlines whose end-minus-start vector points
   against the group's principal endpoint axis are reversed (and the flip is recorded).
4. Canonical order within a group: a nearest-neighbour chain starting from the streamline
   lowest on the group's first principal component, so that neighbouring rows of the image
   are similar streamlines.
5. Normalisation with a recorded inverse ``x = y * scale + offset``: ``group`` (centre of
   the group, largest deviation from it), ``global`` (the published model's min-max of
   all coordinates to [-1, 1]) or ``none``.

:meth:`GroupedBundles.to_streamlines` and :meth:`GroupedBundles.to_tractograms` undo all
of it: they return exactly the input streamlines, in the input order, in millimetres and in
the source's space.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.tracking.streamline import length as streamline_length
from dipy.tracking.streamline import set_number_of_points

from tractvq.errors import TractogramError
from tractvq.io import (
    SpaceAttributes,
    TractogramStream,
    check_group_name,
    check_space_attributes,
    dropped_data,
    make_tractogram,
    read_npz,
)
from tractvq.outputs import atomic_output

__all__ = [
    "NORMALIZATIONS",
    "PAPER_SETTINGS",
    "STRATEGIES",
    "BundleSource",
    "GroupedBundles",
    "GroupingSettings",
    "coordinate_range",
    "group",
    "group_stream",
    "group_streamlines",
    "resample",
    "resample_stream",
]

STRATEGIES = ("spatial", "sequential", "random")
NORMALIZATIONS = ("group", "global", "none")
#: Version of the ``grouping`` description; 2 added each source's TRX group, streamline
#: indices in its file and dropped data (absent in version 1: whole files, nothing dropped).
_FORMAT_VERSION = 2
#: Points along a streamline used as its shape features (start, quarters, middle, end).
_FEATURE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class GroupingSettings:
    """How streamlines become groups: the preprocessing a model is trained with.

    Parameters
    ----------
    n_points : int
        Points per streamline after resampling (P).
    group_size : int
        Streamlines per group (S).
    strategy : {"spatial", "sequential", "random"}
        Which streamlines share a group.
    orient : bool
        Reverse streamlines so that all of a group run the same way.
    order : bool
        Sort the streamlines of a group into a canonical order.
    normalization : {"group", "global", "none"}
        Per-group centre and scale, one min-max scaling of everything to [-1, 1], or none
        (for coordinates already in a model's units, e.g. the published arrays).
    minimum, maximum : float or None
        Range of the ``global`` normalisation in millimetres; None fits it to the data.
    seed : int
        Seed of the ``random`` strategy.
    """

    n_points: int = 64
    group_size: int = 64
    strategy: str = "spatial"
    orient: bool = True
    order: bool = True
    normalization: str = "group"
    minimum: float | None = None
    maximum: float | None = None
    seed: int = 0

    def __post_init__(self):
        if int(self.n_points) != self.n_points or self.n_points < 2:
            raise ValueError(f"n_points must be an integer >= 2, got {self.n_points!r}")
        if int(self.group_size) != self.group_size or self.group_size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {self.group_size!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )
        if (self.minimum is None) != (self.maximum is None):
            raise ValueError(
                f"give both minimum and maximum or neither, got {self.minimum!r} and {self.maximum!r}"
            )
        if self.minimum is not None and not self.minimum < self.maximum:
            raise ValueError(f"minimum must be below maximum, got {self.minimum!r} >= {self.maximum!r}")


#: The published VQ-Diff preprocessing: consecutive streamlines in file order, no
#: re-orientation or re-ordering, one global min-max scaling to [-1, 1].
PAPER_SETTINGS = GroupingSettings(
    strategy="sequential", orient=False, order=False, normalization="global"
)


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle's streamlines came from, enough to write them back in place.

    Attributes
    ----------
    subject : str
        Subject identifier.
    name : str
        Bundle name.
    path : str
        Source file ("" when built in memory).
    n_streamlines : int
        Streamline count of the bundle.
    space_attributes : tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)`` of the source's reference.
    group : str or None
        The TRX group the bundle was (None: a whole file, or the streamlines of a grouped
        .trx in no group).
    file_indices : ndarray of int64, shape (n_streamlines,), or None
        Index of each of the bundle's streamlines in the source file (None: the whole file,
        in order). The bundles of one .trx file are written back into one file with them.
    dropped : tuple of str
        The source's data that is not encoded (``"data_per_point 'FA'"``, ...).
    """

    subject: str
    name: str
    path: str
    n_streamlines: int
    space_attributes: SpaceAttributes = field(repr=False, compare=False)
    group: str | None = None
    file_indices: np.ndarray | None = field(default=None, repr=False, compare=False)
    dropped: tuple[str, ...] = ()


def resample(
    tractogram: StatefulTractogram, n_points: int = 64, *, source: str | os.PathLike | None = None
) -> np.ndarray:
    """Resample every streamline to ``n_points`` points equally spaced along it.

    Streamlines that already have ``n_points`` points are kept as they are, so resampling
    is idempotent: a decoded bundle written to disk and read again gives the same groups,
    and arrays resampled by another tool (the published VQ-Diff arrays) are not moved.

    Parameters
    ----------
    tractogram : dipy.io.stateful_tractogram.StatefulTractogram
        In RASMM space (as :func:`tractvq.io.load` returns it).
    n_points : int, optional
        Points per streamline.
    source : str or os.PathLike, optional
        Name used in error messages (the file the tractogram came from).

    Returns
    -------
    ndarray, shape (N, n_points, 3), float32
        Coordinates in millimetres.

    Raises
    ------
    TractogramError
        If the tractogram has no streamline, or a streamline has fewer than two points,
        non-finite coordinates or zero length (such a streamline cannot be resampled).
    """
    if len(tractogram.streamlines) == 0:
        raise TractogramError(source, "holds no streamlines")
    return _resample_streamlines(tractogram.streamlines, int(n_points), source)


def resample_stream(stream: TractogramStream, n_points: int = 64, *, source: str | os.PathLike | None = None) -> np.ndarray:
    """:func:`resample` of a tractogram read chunk by chunk: the same array, in memory that
    holds the resampled points and one chunk of the file.

    Parameters
    ----------
    stream : tractvq.io.TractogramStream
    n_points : int, optional
    source : str or os.PathLike, optional
        Name used in error messages (default: the stream's file).

    Returns
    -------
    ndarray, shape (N, n_points, 3), float32

    Raises
    ------
    TractogramError
        As :func:`resample` (indices count from the file's first streamline), or as
        :meth:`tractvq.io.TractogramStream.chunks`.
    """
    source = stream.path if source is None else source
    # The header's count (checked at the end), if the file can hold it: a streamline takes
    # at least 28 bytes in either format (its count or delimiter, and two points).
    capacity = min(stream.announced, stream.path.stat().st_size // 28)
    resampled = np.empty((capacity, int(n_points), 3), np.float32)
    parts, count = [], 0
    for chunk in stream.chunks():
        points = _resample_streamlines(chunk, int(n_points), source, first=count)
        if count + len(points) <= len(resampled):
            resampled[count : count + len(points)] = points
        else:
            parts.append(points)
        count += len(points)
    if count == 0:
        raise TractogramError(source, "holds no streamlines")
    return np.concatenate([resampled[:count], *parts]) if parts else resampled[:count]


def _resample_streamlines(streamlines, n_points: int, source, *, first: int = 0) -> np.ndarray:
    """:func:`resample` of an ArraySequence; error messages count indices from ``first``."""
    count = len(streamlines)
    lengths = np.asarray(streamlines._lengths)
    _reject(source, lengths < 2, "have fewer than 2 points", first)
    arc_lengths = np.asarray(streamline_length(streamlines), dtype=np.float64)  # NaN/inf if non-finite
    _reject(source, ~np.isfinite(arc_lengths), "have non-finite coordinates", first)
    _reject(source, arc_lengths <= 0, "have zero length (all points identical)", first)
    kept = lengths == n_points
    if not kept.any():
        return _as_array(set_number_of_points(streamlines, nb_points=n_points), n_points)
    resampled = np.empty((count, n_points, 3), dtype=np.float32)
    resampled[kept] = np.asarray([streamlines[index] for index in np.flatnonzero(kept)], dtype=np.float32)
    if not kept.all():
        resampled[~kept] = _as_array(set_number_of_points(streamlines[np.flatnonzero(~kept)], nb_points=n_points), n_points)
    return resampled


def _as_array(streamlines, n_points: int) -> np.ndarray:
    """``(N, n_points, 3)`` float32 from an ArraySequence of streamlines of ``n_points``.

    DIPY's resampling writes a fresh, packed ArraySequence; its buffer is used without the
    copy ``get_data()`` would make.
    """
    packed = np.array_equal(streamlines._offsets, np.arange(len(streamlines)) * n_points)
    data = streamlines._data if packed and len(streamlines._data) == len(streamlines) * n_points else streamlines.get_data()
    return np.asarray(data, dtype=np.float32).reshape(len(streamlines), n_points, 3)


def _reject(source, bad: np.ndarray, problem: str, first: int = 0) -> None:
    if bad.any():
        where = np.flatnonzero(bad)
        raise TractogramError(
            source,
            f"{where.size} streamline(s) {problem} (first at index {first + where[0]});"
            " remove them before encoding",
        )


def coordinate_range(points: np.ndarray) -> tuple[float, float]:
    """Smallest and largest coordinate over x, y and z together (the published scaling).

    Parameters
    ----------
    points : ndarray, shape (..., 3)

    Returns
    -------
    (float, float)
    """
    return float(np.min(points)), float(np.max(points))


def _principal_axes(vectors: np.ndarray) -> np.ndarray:
    """Unit principal axis of each batch of vectors, with a canonical sign.

    ``vectors`` is ``(..., n, d)``; the axis maximises the sum of squared projections (no
    centring: this is the axis of a set of directions). Its largest component is positive,
    so the result does not depend on LAPACK's sign choice.
    """
    second_moment = np.swapaxes(vectors, -1, -2) @ vectors
    _, eigenvectors = np.linalg.eigh(second_moment)
    axes = eigenvectors[..., -1]
    largest = np.take_along_axis(axes, np.abs(axes).argmax(axis=-1)[..., None], axis=-1)
    return axes * np.where(largest < 0, -1.0, 1.0)


def _flips(shapes: np.ndarray) -> np.ndarray:
    """Which streamlines of each set ``(..., n, k, 3)`` (points along each streamline, first
    and last being its ends) to reverse so that all run the same way: those whose
    end-minus-start vector points against the set's principal axis."""
    chords = shapes[..., -1, :] - shapes[..., 0, :]
    axes = _principal_axes(chords)
    return np.einsum("...ni,...i->...n", chords, axes) < 0


def _shape_features(points: np.ndarray) -> np.ndarray:
    """Five points ``(N, 5, 3)`` along each streamline ``(N, P, 3)``, float64: the ends, the
    quarters and the middle, placed symmetrically so that reversing a streamline reverses
    its features."""
    n_points = points.shape[1]
    quarter = round((n_points - 1) / 4)
    middle = (points[:, (n_points - 1) // 2] + points[:, n_points // 2]) / 2.0
    ends = points[:, [0, quarter, n_points - 1 - quarter, n_points - 1]].astype(np.float64)
    return np.stack([ends[:, 0], ends[:, 1], middle.astype(np.float64), ends[:, 2], ends[:, 3]], axis=1)


def _reversed_where(flips: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """``shapes`` (..., k, 3) with the point order reversed where ``flips`` (...) is True."""
    return np.where(flips[..., None, None], shapes[..., ::-1, :], shapes)


def _first_component_projection(features: np.ndarray) -> np.ndarray:
    """Projection of each row of ``(..., n, d)`` on the first principal component of its set."""
    centred = features - features.mean(axis=-2, keepdims=True)
    return (centred @ _principal_axes(centred)[..., None])[..., 0]


#: Groups :func:`_chain_order` orders at once: its distances are ``(groups, S, S)`` float64,
#: as large as the groups' data for all of them.
_CHAIN_GROUPS = 256


def _chain_order(features: np.ndarray) -> np.ndarray:
    """Canonical order of the rows of each group ``(G, S, d)``: a nearest-neighbour chain.

    The chain starts at the row lowest on the group's first principal component and each
    next row is the nearest (in feature space) row not yet taken, so neighbouring rows of
    the group image are similar streamlines. Returns the ``(G, S)`` permutation, made
    :data:`_CHAIN_GROUPS` groups at a time.
    """
    order = np.empty(features.shape[:2], dtype=np.int64)
    for start in range(0, len(features), _CHAIN_GROUPS):
        order[start : start + _CHAIN_GROUPS] = _chains(features[start : start + _CHAIN_GROUPS])
    return order


def _chains(features: np.ndarray) -> np.ndarray:
    """:func:`_chain_order` of all the groups ``(G, S, d)`` at once."""
    n_groups, size, _ = features.shape
    squared_norms = np.einsum("gsi,gsi->gs", features, features)
    distances = squared_norms[:, :, None] + squared_norms[:, None, :] - 2 * np.einsum("gsi,gti->gst", features, features)
    groups = np.arange(n_groups)
    current = _first_component_projection(features).argmin(axis=1)
    order = np.empty((n_groups, size), dtype=np.int64)
    for position in range(size):
        order[:, position] = current
        distances[groups, :, current] = np.inf  # taken: never the nearest again
        current = distances[groups, current].argmin(axis=1)
    return order


def _spatial_order(shapes: np.ndarray, group_size: int) -> np.ndarray:
    """Order streamlines so that consecutive runs of ``group_size`` are spatial neighbours.

    Balanced recursive bisection: a set of ``n`` streamlines is sorted along the first
    principal component of their shape features and cut after ``group_size * (g // 2)``
    streamlines, ``g = ceil(n / group_size)``, so every leaf but the last holds exactly
    ``group_size`` streamlines. ``shapes`` are the :func:`_shape_features` ``(N, 5, 3)``,
    taken after orienting all streamlines along one axis, so a streamline and its reverse
    get the same place.
    """
    features = _reversed_where(_flips(shapes), shapes).reshape(len(shapes), -1)
    order = np.arange(len(shapes))
    level = [(0, len(shapes))]  # (start, size) of the sets to split, one tree level at a time
    while level:
        starts_by_size: dict[int, list[int]] = {}
        for start, size in level:
            if size > group_size:
                starts_by_size.setdefault(size, []).append(start)
        level = []
        for size, starts in starts_by_size.items():  # all sets of one size in one batch
            rows = np.asarray(starts)[:, None] + np.arange(size)  # (M, size)
            members = order[rows]
            projection = _first_component_projection(features[members])  # (M, size)
            order[rows] = np.take_along_axis(members, np.argsort(projection, axis=1, kind="stable"), axis=1)
            cut = group_size * (-(-size // group_size) // 2)
            level += [(start, cut) for start in starts] + [(start + cut, size - cut) for start in starts]
    return order


def _member_index(order: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``order`` into groups, completing the last one by repeating its members.

    Returns the ``(G, S)`` streamline index and the mask of first copies.
    """
    count = len(order)
    n_groups = -(-count // group_size)
    remainder = count - (n_groups - 1) * group_size
    last = order[(n_groups - 1) * group_size :]
    padded = np.concatenate([order[: (n_groups - 1) * group_size], last[np.arange(group_size) % remainder]])
    mask = np.ones(n_groups * group_size, dtype=bool)
    mask[(n_groups - 1) * group_size + remainder :] = False
    return padded.reshape(n_groups, group_size), mask.reshape(n_groups, group_size)


def group_streamlines(
    points: np.ndarray,
    settings: GroupingSettings = GroupingSettings(),
    *,
    source: BundleSource,
) -> GroupedBundles:
    """Group resampled streamlines of one bundle.

    Parameters
    ----------
    points : ndarray, shape (N, P, 3)
        Resampled streamlines in millimetres (see :func:`resample`).
    settings : GroupingSettings, optional
        Grouping, orientation, order and normalisation.
    source : BundleSource
        Where the streamlines came from.

    Returns
    -------
    GroupedBundles
        With ``ceil(N / S)`` groups (none for an empty bundle, e.g. an empty TRX group).
    """
    count, n_points, _ = points.shape
    if count != source.n_streamlines:
        raise ValueError(f"source says {source.n_streamlines} streamlines, got {count}")
    if n_points != settings.n_points:
        raise ValueError(f"settings say {settings.n_points} points, got streamlines of {n_points}")
    size = settings.group_size
    if count == 0:
        return GroupedBundles(
            data=np.empty((0, 3, size, n_points), np.float32), bundle_index=np.empty(0, np.int64),
            streamline_index=np.empty((0, size), np.int64), mask=np.empty((0, size), bool),
            flipped=np.empty((0, size), bool), offset=np.empty((0, 3)), scale=np.empty(0),
            sources=[source], settings=settings,
        )
    shapes = _shape_features(points)  # (N, 5, 3): every decision below is taken on these
    if settings.strategy == "sequential":
        order = np.arange(count)
    elif settings.strategy == "random":
        order = np.random.default_rng(settings.seed).permutation(count)
    else:
        order = _spatial_order(shapes, size)
    streamline_index, mask = _member_index(order, size)  # (G, S)
    group_shapes = shapes[streamline_index]  # (G, S, 5, 3)
    flipped = _flips(group_shapes) if settings.orient else np.zeros(streamline_index.shape, bool)
    if settings.order:
        rows = _chain_order(_reversed_where(flipped, group_shapes).reshape(*flipped.shape, -1))
        streamline_index, mask, flipped = (
            np.take_along_axis(array, rows, axis=1) for array in (streamline_index, mask, flipped)
        )
    data = np.empty((len(streamline_index), 3, size, n_points), np.float32)  # (G, 3, S, P)
    for axis in range(3):  # one coordinate at a time: a third of the groups' size at once
        coordinate = points[:, :, axis][streamline_index]  # (G, S, P)
        coordinate[flipped] = coordinate[flipped][:, ::-1]
        data[:, axis] = coordinate
    offset, scale = _fit_normalization(data, settings)
    data -= offset.astype(np.float32)[:, :, None, None]
    data /= scale.astype(np.float32)[:, None, None, None]
    return GroupedBundles(
        data=data,
        bundle_index=np.zeros(len(streamline_index), dtype=np.int64),
        streamline_index=streamline_index.astype(np.int64),
        mask=mask,
        flipped=flipped,
        offset=offset,
        scale=scale,
        sources=[source],
        settings=settings,
    )


def _fit_normalization(data: np.ndarray, settings: GroupingSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per-group ``offset`` (G, 3) and ``scale`` (G,) of groups ``data`` (G, 3, S, P) in mm,
    with ``normalised = (x - offset) / scale``.

    Both are rounded to float32, the precision the normalisation is computed in, so that
    the recorded inverse is the one that was applied.
    """
    n_groups = len(data)
    coordinates = data.reshape(n_groups, 3, -1)  # (G, 3, S * P)
    if settings.normalization == "group":
        offset = coordinates.mean(axis=2, dtype=np.float64).astype(np.float32)
        # largest |x - offset| of each group, without a temporary of the data's size
        above = coordinates.max(axis=2) - offset
        below = offset - coordinates.min(axis=2)
        scale = np.maximum(above, below).max(axis=1)
    elif settings.normalization == "none":  # coordinates already in the model's units
        offset = np.zeros((n_groups, 3), dtype=np.float32)
        scale = np.ones(n_groups, dtype=np.float32)
    else:
        if settings.minimum is None:
            minimum, maximum = coordinate_range(data)
        else:
            minimum, maximum = settings.minimum, settings.maximum
        # min-max to [-1, 1]: 2 (x - min) / (max - min) - 1 = (x - (min + max) / 2) / ((max - min) / 2)
        offset = np.full((n_groups, 3), (minimum + maximum) / 2, dtype=np.float32)
        scale = np.full(n_groups, (maximum - minimum) / 2, dtype=np.float32)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    return offset.astype(np.float64), scale.astype(np.float64)


def group(
    tractogram: StatefulTractogram,
    settings: GroupingSettings = GroupingSettings(),
    *,
    subject: str = "",
    name: str = "",
    path: str | os.PathLike = "",
    trx_group: str | None = None,
    file_indices: np.ndarray | None = None,
) -> GroupedBundles:
    """Resample and group the streamlines of one tractogram (one bundle).

    Parameters
    ----------
    tractogram : dipy.io.stateful_tractogram.StatefulTractogram
        Converted in place to RASMM space and voxel-centre origin (as :func:`tractvq.io.load`
        returns it).
    settings : GroupingSettings, optional
        Preprocessing; for ``global`` normalisation without ``minimum``/``maximum``, the
        range is fitted to this tractogram alone.
    subject, name : str, optional
        Labels stored with the groups.
    path : str or os.PathLike, optional
        The source file, used in error messages and stored with the groups.
    trx_group : str, optional
        The TRX group the tractogram is (see :class:`tractvq.io.TractogramRecord`).
    file_indices : ndarray of int, optional
        Index of each streamline in the file (a TRX group or the streamlines in none). An
        empty one gives a bundle without groups; an empty tractogram is refused otherwise.

    Returns
    -------
    GroupedBundles

    Raises
    ------
    TractogramError
        See :func:`resample`.
    """
    tractogram.to_rasmm()
    tractogram.to_center()
    where = f"{os.fspath(path)} (group {trx_group!r})" if trx_group is not None else path or name or None
    if file_indices is not None and len(tractogram.streamlines) == 0:
        points = np.empty((0, settings.n_points, 3), np.float32)
    else:
        points = resample(tractogram, settings.n_points, source=where)
    space_attributes, dropped = tuple(tractogram.space_attributes), dropped_data(tractogram)
    del tractogram  # the last reference in group(load(path)): its points go before grouping
    return _group_points(
        points, settings, subject=subject, name=name, path=path, space_attributes=space_attributes,
        dropped=dropped, trx_group=trx_group, file_indices=file_indices,
    )


def _group_points(points: np.ndarray, settings: GroupingSettings, *, subject, name, path, space_attributes,
                  dropped, trx_group=None, file_indices=None) -> GroupedBundles:
    """:func:`group_streamlines` of one bundle's resampled ``points``, with its source."""
    source = BundleSource(
        subject=subject,
        name=name,
        path=os.fspath(path),
        n_streamlines=len(points),
        space_attributes=space_attributes,
        group=trx_group,
        file_indices=None if file_indices is None else np.asarray(file_indices, dtype=np.int64),
        dropped=dropped,
    )
    return group_streamlines(points, settings, source=source)


def group_stream(
    stream: TractogramStream, settings: GroupingSettings = GroupingSettings(), *, subject: str = "", name: str = ""
) -> GroupedBundles:
    """:func:`group` of a file read chunk by chunk (:func:`tractvq.io.stream`): the same groups,
    without the whole tractogram in memory (see :func:`resample_stream`).

    Parameters
    ----------
    stream : tractvq.io.TractogramStream
    settings : GroupingSettings, optional
    subject, name : str, optional
        Labels stored with the groups.

    Returns
    -------
    GroupedBundles

    Raises
    ------
    TractogramError
        See :func:`resample_stream`.
    """
    return _group_points(
        resample_stream(stream, settings.n_points), settings, subject=subject, name=name, path=stream.path,
        space_attributes=stream.space_attributes, dropped=stream.dropped,
    )


@dataclass
class GroupedBundles:
    """Groups of streamlines of one or more bundles, with everything needed to undo them.

    Attributes
    ----------
    data : ndarray, shape (G, 3, S, P), float32
        Normalised groups, the model's input.
    bundle_index : ndarray, shape (G,), int64
        Index into ``sources`` of each group's bundle.
    streamline_index : ndarray, shape (G, S), int64
        Index of each row's streamline in its bundle's source.
    mask : ndarray, shape (G, S), bool
        True for the one row of each source streamline that decoding returns (rows that
        complete a short group repeat a streamline and are False).
    flipped : ndarray, shape (G, S), bool
        Rows stored in reverse point order.
    offset : ndarray, shape (G, 3), float64
    scale : ndarray, shape (G,), float64
        Normalisation: millimetres = ``data * scale + offset``.
    sources : list of BundleSource
        One per bundle.
    settings : GroupingSettings
        The preprocessing that made the groups.
    """

    data: np.ndarray
    bundle_index: np.ndarray
    streamline_index: np.ndarray
    mask: np.ndarray
    flipped: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    sources: list[BundleSource]
    settings: GroupingSettings

    def __len__(self) -> int:
        return len(self.data)

    @property
    def bundle_names(self) -> list[str]:
        """Name of each bundle, in ``sources`` order."""
        return [source.name for source in self.sources]

    def denormalize(self, data: np.ndarray | None = None) -> np.ndarray:
        """Groups in millimetres, in stored row order and orientation.

        Parameters
        ----------
        data : ndarray, shape (G, 3, S, P), optional
            Normalised groups (e.g. a model's reconstruction); default ``self.data``.

        Returns
        -------
        ndarray, shape (G, S, P, 3), float64
        """
        data = self.data if data is None else np.asarray(data)
        if data.shape != self.data.shape:
            raise ValueError(f"expected groups of shape {self.data.shape}, got {data.shape}")
        points = data.transpose(0, 2, 3, 1).astype(np.float64)
        return points * self.scale[:, None, None, None] + self.offset[:, None, None, :]

    def to_streamlines(self, data: np.ndarray | None = None) -> list[np.ndarray]:
        """The streamlines of each bundle in the source order, orientation and space.

        Parameters
        ----------
        data : ndarray, shape (G, 3, S, P), optional
            Normalised groups to decode; default ``self.data`` (the identity round trip).

        Returns
        -------
        list of ndarray, shape (N_b, P, 3), float64
            One array per bundle of ``sources``, in millimetres (RASMM).
        """
        points = self.denormalize(data)
        points = np.where(self.flipped[..., None, None], points[:, :, ::-1], points)
        bundles = []
        for index, source in enumerate(self.sources):
            rows = (self.bundle_index[:, None] == index) & self.mask
            streamlines = np.empty((source.n_streamlines, points.shape[2], 3))
            streamlines[self.streamline_index[rows]] = points[rows]
            bundles.append(streamlines)
        return bundles

    def to_tractograms(self, data: np.ndarray | None = None) -> list[StatefulTractogram]:
        """Decoded bundles as tractograms in their source space, ready for :func:`tractvq.io.save`.

        Parameters
        ----------
        data : ndarray, shape (G, 3, S, P), optional
            Normalised groups to decode; default ``self.data``.

        Returns
        -------
        list of dipy.io.stateful_tractogram.StatefulTractogram
            One per bundle of ``sources``.
        """
        return [
            make_tractogram(streamlines.astype(np.float32), source.space_attributes)
            for streamlines, source in zip(self.to_streamlines(data), self.sources)
        ]

    def select(self, groups: np.ndarray) -> GroupedBundles:
        """A subset of the groups (e.g. a validation split).

        The result keeps all ``sources``; decoding it is only meaningful for bundles all of
        whose groups were selected.

        Parameters
        ----------
        groups : ndarray of int or bool
            Group indices or a boolean mask of length G.
        """
        return replace(
            self,
            **{
                name: getattr(self, name)[groups]
                for name in ("data", "bundle_index", "streamline_index", "mask", "flipped", "offset", "scale")
            },
        )

    @classmethod
    def concatenate(cls, parts: list[GroupedBundles]) -> GroupedBundles:
        """Join groups made with the same settings (e.g. the bundles of a subject).

        One part is returned as it is (no copy of its groups).

        Raises
        ------
        ValueError
            If ``parts`` is empty or the parts were made with different settings.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        settings = parts[0].settings
        for part in parts[1:]:
            if part.settings != settings:
                raise ValueError(f"cannot join groups made with {part.settings} and {settings}")
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(part.sources) for part in parts[:-1]])
        return cls(
            data=np.concatenate([part.data for part in parts]),
            bundle_index=np.concatenate([part.bundle_index + shift for part, shift in zip(parts, offsets)]),
            streamline_index=np.concatenate([part.streamline_index for part in parts]),
            mask=np.concatenate([part.mask for part in parts]),
            flipped=np.concatenate([part.flipped for part in parts]),
            offset=np.concatenate([part.offset for part in parts]),
            scale=np.concatenate([part.scale for part in parts]),
            sources=[source for part in parts for source in part.sources],
            settings=settings,
        )

    def to_arrays(self, *, with_data: bool = True) -> dict[str, np.ndarray]:
        """Everything as NumPy arrays (no objects), for ``np.savez``.

        Parameters
        ----------
        with_data : bool, optional
            Include the groups ``data``; without it, the arrays describe how to turn decoded
            groups back into streamlines (what a codes file stores).

        Returns
        -------
        dict of str to ndarray
            ``grouping`` (a JSON string: settings and sources), the index map, mask, flips,
            normalisation, the sources' references, ``file_indices`` (the sources' that
            have them, joined) if any, and ``data`` if asked for.
        """
        description = {
            "format_version": _FORMAT_VERSION,
            "shape": list(self.data.shape),
            "settings": asdict(self.settings),
            "sources": [
                {key: getattr(source, key) for key in ("subject", "name", "path", "n_streamlines", "group")}
                | {"voxel_order": source.space_attributes[3], "dropped": list(source.dropped),
                   "file_indices": source.file_indices is not None}
                for source in self.sources
            ],
        }
        arrays = {
            "grouping": np.array(json.dumps(description)),
            "bundle_index": self.bundle_index,
            "streamline_index": self.streamline_index,
            "mask": self.mask,
            "flipped": self.flipped,
            "offset": self.offset,
            "scale": self.scale,
            "affines": np.stack([source.space_attributes[0] for source in self.sources]),
            "dimensions": np.stack([source.space_attributes[1] for source in self.sources]),
            "voxel_sizes": np.stack([source.space_attributes[2] for source in self.sources]),
        }
        indexed = [source.file_indices for source in self.sources if source.file_indices is not None]
        if indexed:
            arrays["file_indices"] = np.concatenate(indexed).astype(np.int64)
        if with_data:
            arrays["data"] = self.data
        return arrays

    @classmethod
    def from_arrays(cls, arrays, path: str | os.PathLike | None = None) -> GroupedBundles:
        """Rebuild from :meth:`to_arrays` output (e.g. an opened ``.npz``) and validate.

        Without ``data``, the result's ``data`` is a read-only array of NaN of the recorded
        shape: it can decode groups given to :meth:`to_streamlines`, not be decoded itself.

        Raises
        ------
        TractogramError
            Naming ``path``, if arrays are missing, of the wrong type or inconsistent.
        """
        description = _read_description(arrays, path)
        spaces = [
            check_space_attributes(path, (affine, dimensions, voxel_sizes, entry["voxel_order"]))
            for entry, affine, dimensions, voxel_sizes in zip(
                description["sources"], _array(arrays, "affines", "f", 3, path),
                _array(arrays, "dimensions", "iu", 2, path), _array(arrays, "voxel_sizes", "f", 2, path),
            )
        ]
        if not len(spaces) == len(arrays["dimensions"]) == len(arrays["voxel_sizes"]) == len(description["sources"]):
            raise TractogramError(path, "the number of references differs from the number of bundles")
        sources = [
            BundleSource(
                entry["subject"], entry["name"], entry["path"], entry["n_streamlines"], space,
                group=entry.get("group"), file_indices=indices, dropped=tuple(entry.get("dropped", ())),
            )
            for entry, space, indices in zip(description["sources"], spaces, _file_indices(arrays, description, path))
        ]
        if "data" in arrays:
            data = _array(arrays, "data", "f", 4, path)
        else:
            data = np.broadcast_to(np.float32(np.nan), description["shape"])
        try:
            grouped = cls(
                data=data,
                bundle_index=_array(arrays, "bundle_index", "iu", 1, path).astype(np.int64),
                streamline_index=_array(arrays, "streamline_index", "iu", 2, path).astype(np.int64),
                mask=_array(arrays, "mask", "b", 2, path),
                flipped=_array(arrays, "flipped", "b", 2, path),
                offset=_array(arrays, "offset", "f", 2, path).astype(np.float64),
                scale=_array(arrays, "scale", "f", 1, path).astype(np.float64),
                sources=sources,
                settings=GroupingSettings(**description["settings"]),
            )
        except (TypeError, ValueError) as error:
            raise TractogramError(path, f"not a tractvq groups description ({error})") from error
        grouped.validate(path)
        return grouped

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write to an uncompressed ``.npz`` file (no pickle), atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Output ``.npz`` file.
        force : bool, optional
            Replace an existing file.

        Returns
        -------
        pathlib.Path
        """
        with atomic_output(path, force=force, suffix=".npz") as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **self.to_arrays())  # a handle: np.savez appends .npz to other names
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GroupedBundles:
        """Read a file written by :meth:`save`.

        Raises
        ------
        TractogramError
            If the file is missing, not such a file, or inconsistent.
        """
        path = Path(path)
        if not path.is_file():
            raise TractogramError(path, "no such file")
        return cls.from_arrays(read_npz(path, "tractvq groups file"), path)

    def validate(self, path: str | os.PathLike | None = None) -> None:
        """Check that the arrays agree with each other and that every source streamline has
        exactly one unmasked row.

        Raises
        ------
        TractogramError
            Naming ``path`` and the inconsistency.
        """
        n_groups = len(self.data)
        expected = {
            "bundle_index": (n_groups,),
            "streamline_index": (n_groups, self.settings.group_size),
            "mask": (n_groups, self.settings.group_size),
            "flipped": (n_groups, self.settings.group_size),
            "offset": (n_groups, 3),
            "scale": (n_groups,),
        }
        if self.data.shape[1:] != (3, self.settings.group_size, self.settings.n_points):
            raise TractogramError(path, f"groups have shape {self.data.shape[1:]}, settings disagree")
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise TractogramError(path, f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        if not (np.all(np.isfinite(self.offset)) and np.all(np.isfinite(self.scale)) and np.all(self.scale > 0)):
            raise TractogramError(path, "the normalisation (offset, scale) must be finite with scale > 0")
        if n_groups and not 0 <= self.bundle_index.min() <= self.bundle_index.max() < len(self.sources):
            raise TractogramError(path, f"bundle_index must be in 0..{len(self.sources) - 1}")
        for source in self.sources:
            _check_file_indices(path, source)
        counts_of = np.array([source.n_streamlines for source in self.sources], dtype=np.int64)
        bounds = counts_of[self.bundle_index][:, None] if n_groups else np.zeros((0, 1), np.int64)
        if np.any((self.streamline_index < 0) | (self.streamline_index >= bounds)):
            raise TractogramError(path, "streamline_index points past its bundle's streamlines")
        for index, source in enumerate(self.sources):
            rows = (self.bundle_index[:, None] == index) & self.mask
            if rows.sum() != source.n_streamlines or not np.all(
                np.bincount(self.streamline_index[rows], minlength=source.n_streamlines) == 1
            ):
                raise TractogramError(
                    path, f"bundle {source.name!r}: not every streamline has exactly one row"
                )


def _check_file_indices(path, source: BundleSource) -> None:
    """A source's TRX group name and indices in its file: a usable name (see
    :func:`tractvq.io.check_group_name`) only with indices; one non-negative index per
    streamline, none twice."""
    if source.group is not None:
        check_group_name(path, source.group)
        if source.file_indices is None:
            raise TractogramError(path, f"bundle {source.name!r} is a TRX group without its streamlines' indices")
    indices = source.file_indices
    if indices is None:
        return
    if indices.shape != (source.n_streamlines,):
        raise TractogramError(path, f"bundle {source.name!r}: {indices.shape} file indices for {source.n_streamlines} streamlines")
    if indices.size and (indices.min() < 0 or len(np.unique(indices)) != len(indices)):
        raise TractogramError(path, f"bundle {source.name!r}: file indices must be distinct and not negative")


def _file_indices(arrays, description: dict, path) -> list[np.ndarray | None]:
    """Each source's slice of the ``file_indices`` array (None for sources without)."""
    flags = [entry.get("file_indices", False) for entry in description["sources"]]
    if not any(flags):
        return [None] * len(flags)
    joined = _array(arrays, "file_indices", "iu", 1, path)
    counts = [entry["n_streamlines"] for entry, flag in zip(description["sources"], flags) if flag]
    if len(joined) != sum(counts):
        raise TractogramError(path, f"file_indices holds {len(joined)} indices for {sum(counts)} streamlines")
    if joined.size and joined.max() > np.iinfo(np.int64).max:
        raise TractogramError(path, "file_indices holds indices beyond int64")
    parts = iter(np.split(joined.astype(np.int64), np.cumsum(counts)[:-1]))
    return [next(parts) if flag else None for flag in flags]


def _read_description(arrays, path) -> dict:
    """The ``grouping`` member: settings, shape and sources, every field of the right type."""
    if "grouping" not in arrays:
        raise TractogramError(path, "not a tractvq groups description (no 'grouping' array)")
    text = arrays["grouping"]
    try:
        description = json.loads(str(text)) if text.dtype.kind == "U" and text.ndim == 0 else None
    except ValueError:
        description = None
    if not (
        isinstance(description, dict)
        and isinstance(description.get("settings"), dict)
        and isinstance(description.get("sources"), list)
        and isinstance(description.get("shape"), list)
        and len(description["shape"]) == 4
        and all(_is_count(value) for value in description["shape"])
    ):
        raise TractogramError(path, "not a tractvq groups description (bad 'grouping' JSON)")
    version = description.get("format_version", 1)
    if not _is_count(version) or version > _FORMAT_VERSION:
        raise TractogramError(path, f"grouping format {version!r} is not one this tractvq reads; update tractvq")
    fields = {"subject": str, "name": str, "path": str, "voxel_order": str}
    optional = {"group": (str, type(None)), "file_indices": bool, "dropped": list}  # format version 2
    for entry in description["sources"]:
        if not (
            isinstance(entry, dict)
            and all(isinstance(entry.get(key), kind) for key, kind in fields.items())
            and all(isinstance(entry[key], kind) for key, kind in optional.items() if key in entry)
            and all(isinstance(item, str) and item.isprintable() for item in entry.get("dropped", ()))
            and _is_count(entry.get("n_streamlines"))
        ):
            raise TractogramError(path, f"bad bundle description in 'grouping': {str(entry)[:80]}")
    return description


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _array(arrays, name: str, kinds: str, ndim: int, path) -> np.ndarray:
    """``arrays[name]`` if its dtype kind is one of ``kinds`` and it has ``ndim`` axes."""
    if name not in arrays:
        raise TractogramError(path, f"not a tractvq groups description (no {name!r} array)")
    array = arrays[name]
    if array.dtype.kind not in kinds or array.ndim != ndim:
        raise TractogramError(path, f"{name} has dtype {array.dtype} and {array.ndim} axes, expected {ndim} axes")
    return array
