"""Baseline codecs: the plain ways to store a bundle that a bundle code has to beat.

Each baseline turns the groups of :class:`~tractvq.bundles.GroupedBundles` into bytes and
back, so that it is scored exactly like a model (same groups, same MDF and BUAN):

``pca-K``
    Per-streamline principal component analysis of the ``3 * P`` normalised coordinates of a
    streamline, fitted on training groups (:meth:`PCABaseline.fit`); each streamline is
    stored as ``K`` float32 coefficients, ``4 K`` bytes.
``pca-K@Bbits``
    The same coefficients quantised to ``B`` bits per streamline in all, packed into a bit
    stream of ``ceil(N B / 8)`` bytes for ``N`` streamlines (288 bytes for 64 streamlines at
    36 bits). The bits are allocated greedily across the coefficients by their training
    variances (each next bit to the coefficient of largest ``variance * 4**-bits``, the
    high-resolution rule); a coefficient with ``b > 0`` bits has a uniform quantiser of
    ``L = 2**b`` cells over ``+-(1.2 + 0.52 ln L)`` training standard deviations (close to
    the best uniform quantiser of a Gaussian; values outside are clipped) that decodes to the
    cell's centre, one with no bits decodes to 0 (its mean). The same quantiser rule as the
    ``basis`` models' (:class:`tractvq.models.basis.UniformLevels`), so that the comparison
    at equal bytes is of the codes, not of the quantisers.
``dipy-compress-T``
    DIPY's :func:`~dipy.tracking.streamlinespeed.compress_streamlines` (the linearisation of
    Presseau et al., "A new compression format for fiber tracking datasets", NeuroImage 2015)
    at tolerance ``T`` mm, run on the original streamlines in millimetres when they are given
    (else on the resampled ones), the kept points stored as float16 and each streamline's
    point count as uint16; decoding resamples the kept points to ``P`` points.
``float16``
    The resampled streamlines in millimetres as float16: ``6 P`` bytes (384 for 64 points).

Bytes count what the baseline stores per streamline (:attr:`Encoded.n_bytes`, the size of
its arrays). The per-group side information that every codec uses or could use, and that
the models' byte counts leave out as well, is not counted: the normalisation (offset and
scale, four float32 numbers per group) and the layout (which streamline is in which row,
and which rows are reversed).

::

    pca = make_baseline("pca-16@36bits").fit(load_cache("cache").split("train"))
    pca.save("pca.npz")
    reconstruction, encoded = pca.reconstruct(groups)   # (G, 3, S, P), normalised like groups
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tractvq.bundles import GroupedBundles, GroupingSettings
from tractvq.errors import ModelError, TractogramError
from tractvq.evaluate import regroup_like
from tractvq.io import read_npz
from tractvq.outputs import atomic_output

__all__ = [
    "BASELINE_SPELLINGS",
    "Baseline",
    "DipyCompressBaseline",
    "Encoded",
    "Float16Baseline",
    "PCABaseline",
    "load_pca",
    "make_baseline",
]

#: How each baseline is named, with an example.
BASELINE_SPELLINGS = (
    ("pca-K", "pca-16"),
    ("pca-K@Bbits", "pca-16@36bits"),
    ("dipy-compress-T", "dipy-compress-0.5"),
    ("float16", "float16"),
)
_PCA_FORMAT = "tractvq-pca-baseline"
#: Most bits one coefficient gets.
_MAX_BITS = 16


class Encoded(NamedTuple):
    """What a baseline stores for the streamlines of some groups.

    Attributes
    ----------
    payload : dict of str to ndarray
        The stored arrays.
    n_streamlines : int
        Streamlines encoded (the groups' masked rows).
    """

    payload: dict[str, np.ndarray]
    n_streamlines: int

    @property
    def n_bytes(self) -> int:
        """Bytes stored: the size of the payload's arrays."""
        return int(sum(array.nbytes for array in self.payload.values()))

    @property
    def bytes_per_streamline(self) -> float:
        return self.n_bytes / self.n_streamlines


class Baseline:
    """A named codec of grouped streamlines (subclasses implement :meth:`encode` and
    :meth:`decode`).

    Attributes
    ----------
    name : str
        Its spelling in :func:`make_baseline`.
    needs_fit : bool
        Whether :meth:`fit` must run before encoding.
    """

    name: str
    needs_fit = False

    @property
    def is_fitted(self) -> bool:
        """Whether it can encode (a baseline that needs no fit always can)."""
        return not self.needs_fit

    def fit(self, groups: GroupedBundles) -> Baseline:
        """Learn from training groups (nothing to learn by default). Returns ``self``."""
        return self

    def encode(self, groups: GroupedBundles, originals: Sequence[Sequence[np.ndarray]] | None = None) -> Encoded:
        """Store the streamlines of ``groups`` (its masked rows).

        Parameters
        ----------
        groups : GroupedBundles
        originals : sequence of sequence of ndarray, optional
            Per source of ``groups``, its streamlines before resampling, ``(n_i, 3)`` in
            millimetres in the source order; only ``dipy-compress`` uses them.
        """
        raise NotImplementedError

    def decode(self, encoded: Encoded, groups: GroupedBundles) -> np.ndarray:
        """The groups ``(G, 3, S, P)`` that ``encoded`` stores, normalised like ``groups``."""
        raise NotImplementedError

    def reconstruct(self, groups: GroupedBundles, originals=None) -> tuple[np.ndarray, Encoded]:
        """:meth:`encode` then :meth:`decode`: the reconstruction ``(G, 3, S, P)`` and what
        was stored."""
        encoded = self.encode(groups, originals)
        return self.decode(encoded, groups), encoded


def _rows(groups: GroupedBundles, units: str) -> np.ndarray:
    """The masked rows ``(N, P, 3)``, float64, in stored order and orientation: normalised
    (``units="normalised"``) or in millimetres."""
    if units == "mm":
        return groups.denormalize()[groups.mask]
    return groups.data.transpose(0, 2, 3, 1)[groups.mask].astype(np.float64)


def _training_rows(groups: GroupedBundles, chunk: int = 1024):
    """The normalised masked rows ``(n, P, 3)`` of ``chunk`` groups at a time."""
    for start in range(0, len(groups), chunk):
        data, mask = groups.data[start:start + chunk], groups.mask[start:start + chunk]
        yield data.transpose(0, 2, 3, 1)[mask].astype(np.float64)


def _to_groups(groups: GroupedBundles, rows: np.ndarray, units: str) -> np.ndarray:
    """Decoded masked rows ``(N, P, 3)`` (as :func:`_rows` gives them) as groups ``(G, 3, S,
    P)`` normalised like ``groups``; the rows that repeat a streamline get its decoded copy."""
    if units == "mm":
        group_of_row = np.broadcast_to(np.arange(len(groups))[:, None], groups.mask.shape)[groups.mask]  # (N,)
        rows = (rows - groups.offset[group_of_row, None, :]) / groups.scale[group_of_row, None, None]
    normalised = np.zeros(groups.data.shape[:1] + groups.data.shape[2:] + (3,))  # (G, S, P, 3)
    normalised[groups.mask] = rows
    return regroup_like(groups, groups.to_streamlines(normalised.transpose(0, 3, 1, 2)))


class PCABaseline(Baseline):
    """``pca-K`` and ``pca-K@Bbits``: see the module docstring.

    Parameters
    ----------
    components : int
        K, the coefficients kept per streamline.
    bits : int, optional
        B, bits per streamline in all; None stores float32 coefficients.
    """

    needs_fit = True

    def __init__(self, components: int, bits: int | None = None):
        if int(components) != components or components < 1:
            raise ValueError(f"a PCA baseline keeps at least 1 component, got {components!r}")
        if bits is not None and (int(bits) != bits or bits < 1):
            raise ValueError(f"a quantised PCA baseline stores at least 1 bit per streamline, got {bits!r}")
        self.components = int(components)
        self.bits = None if bits is None else int(bits)
        self.name = f"pca-{self.components}" + ("" if bits is None else f"@{self.bits}bits")
        self.mean = self.basis = self.variances = None  # (3P,), (K, 3P), (K,) once fitted
        self.allocation = self.low = self.high = None  # (K,) each, quantised only
        self.settings: GroupingSettings | None = None  # the training groups' grouping

    def fit(self, groups: GroupedBundles) -> PCABaseline:
        """Fit the mean and the first K principal axes of the training streamlines.

        The axes are the eigenvectors of the coordinates' covariance (float64, accumulated
        over chunks of groups), each with its largest entry positive: the same input gives
        the same basis.

        Parameters
        ----------
        groups : GroupedBundles
            Training groups (e.g. a cache's ``"train"`` split); their masked rows count.

        Raises
        ------
        ValueError
            If there are no training streamlines or fewer coordinates than K.
        """
        size = 3 * groups.settings.n_points
        if self.components > size:
            raise ValueError(f"{self.name}: streamlines of {groups.settings.n_points} points have only {size} coordinates")
        count, total, second = 0, np.zeros(size), np.zeros((size, size))
        for rows in _training_rows(groups):
            rows = rows.reshape(-1, size)
            count, total, second = count + len(rows), total + rows.sum(axis=0), second + rows.T @ rows
        if count < 2:
            raise ValueError(f"{self.name}: at least 2 training streamlines are needed, got {count}")
        mean = total / count
        covariance = (second - count * np.outer(mean, mean)) / (count - 1)
        variances, vectors = np.linalg.eigh(covariance)  # ascending
        basis = vectors[:, ::-1][:, : self.components].T  # (K, 3P)
        largest = np.take_along_axis(basis, np.abs(basis).argmax(axis=1)[:, None], axis=1)
        self.mean, self.basis = mean, basis * np.where(largest < 0, -1.0, 1.0)
        self.variances = np.maximum(variances[::-1][: self.components], 0.0)
        self.settings = groups.settings
        if self.bits is not None:
            self.allocation = _allocate_bits(self.variances, self.bits)
            # range +-(1.2 + 0.52 ln L) deviations for L = 2**b cells (close to the best uniform
            # quantiser of a Gaussian; the rule of tractvq's basis models, tractvq.models.basis)
            cells = 2.0 ** self.allocation
            half_range = (1.2 + 0.52 * np.log(cells)) * np.sqrt(self.variances)
            self.low, self.high = -half_range, np.maximum(half_range, np.finfo(np.float64).eps)
        return self

    def _project(self, rows: np.ndarray) -> np.ndarray:
        """Coefficients ``(N, K)`` of rows ``(N, P, 3)``."""
        return (rows.reshape(len(rows), -1) - self.mean) @ self.basis.T

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    def _check(self, groups: GroupedBundles) -> None:
        if self.mean is None:
            raise ValueError(f"{self.name} is not fitted: fit it on training groups first (--fit-cache)")
        if (groups.settings.n_points, groups.settings.normalization) != (self.settings.n_points, self.settings.normalization):
            raise ValueError(
                f"{self.name} was fitted on groups of {self.settings.n_points} points with {self.settings.normalization!r}"
                f" normalisation, got {groups.settings.n_points} points with {groups.settings.normalization!r}"
            )

    def encode(self, groups: GroupedBundles, originals=None) -> Encoded:
        self._check(groups)
        coefficients = self._project(_rows(groups, "normalised"))  # (N, K)
        if self.bits is None:
            return Encoded({"coefficients": coefficients.astype(np.float32)}, len(coefficients))
        cells = [
            np.clip(np.floor((column - low) / (high - low) * 2**bits), 0, 2**bits - 1).astype(np.int64)
            for column, bits, low, high in zip(coefficients.T, self.allocation, self.low, self.high) if bits
        ]
        fields = [((cell[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8)  # (N, bits) big-endian
                  for cell, bits in zip(cells, self.allocation[self.allocation > 0])]
        return Encoded({"bits": np.packbits(np.concatenate(fields, axis=1).ravel())}, len(coefficients))

    def decode(self, encoded: Encoded, groups: GroupedBundles) -> np.ndarray:
        self._check(groups)
        count = encoded.n_streamlines
        if self.bits is None:
            coefficients = encoded.payload["coefficients"].astype(np.float64)
        else:
            flat = np.unpackbits(encoded.payload["bits"], count=count * self.bits).reshape(count, self.bits)
            coefficients = np.zeros((count, self.components))
            start = 0
            for index, bits in enumerate(self.allocation):
                if bits:
                    cell = flat[:, start:start + bits].astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))
                    step = (self.high[index] - self.low[index]) / 2**bits
                    coefficients[:, index] = self.low[index] + (cell + 0.5) * step
                    start += bits
        rows = (self.mean + coefficients @ self.basis).reshape(count, -1, 3)
        return _to_groups(groups, rows, "normalised")

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the fitted codec to an uncompressed ``.npz`` (no pickle), atomically.

        Raises
        ------
        ValueError
            If it is not fitted.
        tractvq.errors.OutputError
            If ``path`` exists and ``force`` is false, or cannot be written.
        """
        if self.mean is None:
            raise ValueError(f"{self.name} is not fitted: nothing to save")
        description = {"format": _PCA_FORMAT, "format_version": 1, "name": self.name,
                       "grouping": asdict(self.settings)}
        arrays = {"description": np.array(json.dumps(description)), "mean": self.mean, "basis": self.basis,
                  "variances": self.variances}
        if self.bits is not None:
            arrays |= {"allocation": self.allocation, "low": self.low, "high": self.high}
        with atomic_output(path, force=force) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)


def load_pca(path: str | os.PathLike) -> PCABaseline:
    """Read a PCA baseline written by :meth:`PCABaseline.save`.

    Raises
    ------
    tractvq.errors.ModelError
        If the file is missing, not such a file, or inconsistent (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "no such file")
    try:
        arrays = read_npz(path, "tractvq PCA baseline")
    except TractogramError as error:  # a model-like file: its errors are ModelErrors
        raise ModelError(path, error.problem) from error
    try:
        description = json.loads(str(arrays["description"]))
        if description.get("format") != _PCA_FORMAT:
            raise ValueError(f"format is {description.get('format')!r}")
        baseline = make_baseline(description["name"])
        if not isinstance(baseline, PCABaseline):
            raise ValueError(f"{description['name']!r} is not a PCA baseline")
        settings = GroupingSettings(**description["grouping"])
        size, count = 3 * settings.n_points, baseline.components
        expected = {"mean": (size,), "basis": (count, size), "variances": (count,)}
        if baseline.bits is not None:
            expected |= {"allocation": (count,), "low": (count,), "high": (count,)}
        for key, shape in expected.items():
            if arrays[key].shape != shape or arrays[key].dtype.kind not in "fiu" or not np.isfinite(arrays[key]).all():
                raise ValueError(f"{key} has shape {arrays[key].shape} and dtype {arrays[key].dtype}, expected finite {shape}")
    except (OSError, EOFError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelError(path, f"not a tractvq PCA baseline ({error})") from error
    if baseline.bits is not None and (arrays["allocation"].sum() != baseline.bits or (arrays["allocation"] < 0).any()):
        raise ModelError(path, f"its bit allocation does not add up to {baseline.bits} bits")
    baseline.mean, baseline.basis, baseline.variances = arrays["mean"], arrays["basis"], arrays["variances"]
    if baseline.bits is not None:
        baseline.allocation, baseline.low, baseline.high = arrays["allocation"].astype(np.int64), arrays["low"], arrays["high"]
    baseline.settings = settings
    return baseline


def _allocate_bits(variances: np.ndarray, total: int) -> np.ndarray:
    """Bits per coefficient, ``total`` in all: each next bit to the largest ``variance *
    4**-bits`` (first on ties), at most :data:`_MAX_BITS` each."""
    if total > _MAX_BITS * len(variances):
        raise ValueError(f"{total} bits exceed {_MAX_BITS} bits for each of {len(variances)} coefficients")
    bits = np.zeros(len(variances), dtype=np.int64)
    for _ in range(total):
        distortion = np.where(bits < _MAX_BITS, variances * 4.0 ** -bits, -np.inf)
        bits[int(np.argmax(distortion))] += 1
    return bits


class DipyCompressBaseline(Baseline):
    """``dipy-compress-T``: see the module docstring.

    Parameters
    ----------
    tolerance : float
        ``tol_error`` of :func:`~dipy.tracking.streamlinespeed.compress_streamlines`, in mm.
    """

    def __init__(self, tolerance: float):
        if not np.isfinite(tolerance) or tolerance <= 0:
            raise ValueError(f"dipy-compress needs a tolerance > 0 mm, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.name = f"dipy-compress-{self.tolerance:g}"

    def encode(self, groups: GroupedBundles, originals=None) -> Encoded:
        from dipy.tracking.streamlinespeed import compress_streamlines

        if originals is None:  # the resampled streamlines, in their source orientation
            rows = _rows(groups, "mm")
            streamlines = list(np.where(groups.flipped[groups.mask][:, None, None], rows[:, ::-1], rows))
        else:
            if len(originals) != len(groups.sources):
                raise ValueError(f"{len(originals)} original bundles for {len(groups.sources)} sources")
            bundles = np.broadcast_to(groups.bundle_index[:, None], groups.mask.shape)[groups.mask]
            streamlines = [np.asarray(originals[bundle][index], dtype=np.float64)
                           for bundle, index in zip(bundles, groups.streamline_index[groups.mask])]
        compressed = compress_streamlines(streamlines, tol_error=self.tolerance)
        counts = np.array([len(streamline) for streamline in compressed])
        return Encoded({"points": np.concatenate(compressed).astype(np.float16),
                        "counts": counts.astype(np.uint16 if counts.max() < 2**16 else np.uint32)}, len(counts))

    def decode(self, encoded: Encoded, groups: GroupedBundles) -> np.ndarray:
        from dipy.tracking.streamline import set_number_of_points

        points = encoded.payload["points"].astype(np.float64)
        streamlines = np.split(points, np.cumsum(encoded.payload["counts"].astype(np.int64))[:-1])
        rows = np.asarray(set_number_of_points(streamlines, nb_points=groups.settings.n_points), dtype=np.float64)
        rows = np.where(groups.flipped[groups.mask][:, None, None], rows[:, ::-1], rows)  # stored orientation
        return _to_groups(groups, rows, "mm")


class Float16Baseline(Baseline):
    """``float16``: the resampled streamlines in millimetres as float16."""

    name = "float16"

    def encode(self, groups: GroupedBundles, originals=None) -> Encoded:
        rows = _rows(groups, "mm")
        return Encoded({"points": rows.astype(np.float16)}, len(rows))

    def decode(self, encoded: Encoded, groups: GroupedBundles) -> np.ndarray:
        return _to_groups(groups, encoded.payload["points"].astype(np.float64), "mm")


_SPELLINGS = (
    (re.compile(r"pca-(\d+)"), lambda match: PCABaseline(int(match[1]))),
    (re.compile(r"pca-(\d+)@(\d+)bits"), lambda match: PCABaseline(int(match[1]), int(match[2]))),
    (re.compile(r"dipy-compress-(\d+(?:\.\d*)?|\.\d+)"), lambda match: DipyCompressBaseline(float(match[1]))),
    (re.compile(r"float16"), lambda match: Float16Baseline()),
)


def make_baseline(name: str) -> Baseline:
    """The baseline of a name (:data:`BASELINE_SPELLINGS`), unfitted.

    Raises
    ------
    ValueError
        If the name is none of the spellings (listing them) or its numbers are out of range.
    """
    for pattern, build in _SPELLINGS:
        match = pattern.fullmatch(name)
        if match:
            return build(match)
    known = ", ".join(spelling if spelling == example else f"{spelling} (e.g. {example})"
                      for spelling, example in BASELINE_SPELLINGS)
    raise ValueError(f"unknown baseline {name!r}; known: {known}")
