"""The codes file: a tractogram's bundle codes and everything needed to decode them.

A codes file is an uncompressed ``.npz`` (read with ``allow_pickle=False``) holding

``metadata``
    JSON: format and version, tractvq version, the model's identity (fingerprint, config,
    and the name or path it was given as), and which codes are stored.
``packed_indices`` (G, ceil(h * w * bits / 8)) uint8, for discrete models
    The code of every latent position of every group, ``bits = ceil(log2 K)`` bits each
    (``metadata["index_bits"]``), packed per group least significant bit first
    (:func:`pack_indices`): a group takes exactly the bytes the model's code size says.
    Version 1 files held ``indices`` (G, h, w) unpacked; they are still read.
``latents`` (G, h, w, D) float32, for continuous models
    The quantized latents.
the arrays of :meth:`tractvq.bundles.GroupedBundles.to_arrays` without ``data``
    group->streamline map and mask, flips, normalisation, bundle names and source headers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tractvq import __version__
from tractvq.bundles import GroupedBundles
from tractvq.errors import TractogramError
from tractvq.io import input_path, read_npz
from tractvq.outputs import atomic_output

__all__ = ["Codes", "index_dtype", "pack_indices", "unpack_indices"]

CODES_FORMAT = "tractvq-codes"
CODES_FORMAT_VERSION = 2


def index_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds indices below ``codebook_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack each group's indices ``(G, ...)`` into ``ceil(n * bits / 8)`` bytes, ``n`` the
    indices per group, least significant bit first.

    Raises
    ------
    ValueError
        If an index does not fit in ``bits`` bits.
    """
    indices = np.asarray(indices, dtype=np.uint64).reshape(len(indices), -1)  # (G, n)
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    if bits < 64 and indices.size and int(indices.max()) >= 1 << bits:
        raise ValueError(f"index {int(indices.max())} does not fit in {bits} bits")
    places = np.arange(bits, dtype=np.uint64)
    bit_planes = ((indices[:, :, None] >> places) & np.uint64(1)).astype(np.uint8)  # (G, n, bits)
    return np.packbits(bit_planes.reshape(len(indices), -1), axis=1, bitorder="little")


def unpack_indices(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_indices`: indices of shape ``(G, *shape)`` in the smallest
    unsigned type that holds ``bits`` bits."""
    count = int(np.prod(shape))
    bit_planes = np.unpackbits(packed, axis=1, count=count * bits, bitorder="little")
    bit_planes = bit_planes.reshape(len(packed), count, bits).astype(np.uint64)
    indices = (bit_planes << np.arange(bits, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
    return indices.reshape(len(packed), *shape).astype(index_dtype(1 << bits))


@dataclass
class Codes:
    """Encoded bundles.

    Attributes
    ----------
    layout : GroupedBundles
        How groups map back to streamlines (its ``data`` is a NaN placeholder when read from
        a file: the input is not stored).
    indices : ndarray, shape (G, h, w), or None
        Code indices (discrete models).
    latents : ndarray, shape (G, h, w, D), float32, or None
        Quantized latents (continuous models).
    model : dict
        ``fingerprint``, ``config`` (a :class:`~tractvq.models.config.ModelConfig` dict) and
        ``source`` (the name or path the model was given as).
    index_bits : int or None
        Bits of one stored index, ``ceil(log2 K)`` of the model (None: the fewest bits
        that hold the largest index).
    path : pathlib.Path or None
        The file the codes were read from (None when made in memory), named in errors.
    """

    layout: GroupedBundles
    indices: np.ndarray | None
    latents: np.ndarray | None
    model: dict
    index_bits: int | None = None
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if (self.indices is None) == (self.latents is None):
            raise ValueError("codes hold either indices or latents, exactly one of them")
        stored = self.indices if self.indices is not None else self.latents
        if len(stored) != len(self.layout):
            raise ValueError(f"{len(stored)} coded groups for {len(self.layout)} groups")

    @property
    def bits(self) -> int | None:
        """Bits per stored index (None for latents)."""
        if self.indices is None:
            return None
        return self.index_bits or max(1, int(self.indices.max(initial=0)).bit_length())

    @property
    def nbytes(self) -> int:
        """Bytes of the stored codes alone: packed indices, or float32 latents."""
        if self.indices is None:
            return int(self.latents.nbytes)
        per_group = math.ceil(math.prod(self.indices.shape[1:]) * self.bits / 8)  # as pack_indices stores it
        return len(self.indices) * per_group

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the codes file atomically (``.npz``, no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Its name must end in ``.npz``.
        force : bool, optional
            Replace an existing file.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        OutputError
            If the name does not end in ``.npz``, the file exists without ``force``, or it
            cannot be written (see :func:`tractvq.outputs.atomic_output`).
        """
        metadata = {
            "format": CODES_FORMAT,
            "format_version": CODES_FORMAT_VERSION,
            "tractvq_version": __version__,
            "model": self.model,
            "stored": "indices" if self.indices is not None else "latents",
        }
        if self.indices is not None:
            metadata.update(index_bits=self.bits, index_shape=list(self.indices.shape[1:]))
            stored = {"packed_indices": pack_indices(self.indices, self.bits)}
        else:
            stored = {"latents": self.latents}
        with atomic_output(path, force=force, suffix=".npz") as temporary, open(temporary, "wb") as handle:
            np.savez(
                handle,  # a file object: given a name, np.savez writes elsewhere unless it ends in .npz
                metadata=np.array(json.dumps(metadata)),
                **stored,
                **self.layout.to_arrays(with_data=False),
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codes:
        """Read a codes file, checking every member before it is used.

        The members' declared sizes are checked against the archive before anything is
        read, and every array's type, shape and values against the metadata and the
        layout (:meth:`GroupedBundles.from_arrays`); :func:`tractvq.encoding.decode` then
        checks the codes against the model.

        Raises
        ------
        TractogramError
            If the file is missing, not a tractvq codes file, of a newer format, damaged
            or inconsistent.
        """
        path = input_path(path, "a codes file")
        if not path.is_file():
            raise TractogramError(path, "no such file")
        arrays = read_npz(path, "tractvq codes file")
        metadata = _read_metadata(path, arrays)
        layout = GroupedBundles.from_arrays(arrays, path)
        stored = metadata["stored"]
        if stored == "latents":
            latents = _member(path, arrays, "latents")
            if latents.dtype != np.float32 or latents.ndim != 4 or len(latents) != len(layout):
                raise TractogramError(
                    path, f"latents must be float32 of shape ({len(layout)}, h, w, D), got {latents.dtype} {latents.shape}"
                )
            if not np.all(np.isfinite(latents)):
                raise TractogramError(path, "latents hold non-finite values")
            return cls(layout, None, latents, metadata["model"], None, path)
        bits, shape = metadata["index_bits"], tuple(metadata["index_shape"])
        if "indices" not in arrays:
            packed = _member(path, arrays, "packed_indices")
            expected = (len(layout), math.ceil(math.prod(shape) * bits / 8))
            if packed.dtype != np.uint8 or packed.shape != expected:
                raise TractogramError(
                    path, f"packed_indices must be uint8 of shape {expected}, got {packed.dtype} {packed.shape}"
                )
            indices = unpack_indices(packed, bits, shape)
        else:  # format version 1
            indices = _member(path, arrays, "indices")
            if indices.dtype.kind not in "ui" or indices.shape != (len(layout), *shape):
                raise TractogramError(
                    path, f"indices must be integers of shape {(len(layout), *shape)}, got {indices.dtype} {indices.shape}"
                )
            if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= 1 << (bits or 64)):
                raise TractogramError(path, f"indices must be in 0..{(1 << (bits or 64)) - 1}")
            indices = indices.astype(index_dtype(1 << (bits or 64)))
        return cls(layout, indices, None, metadata["model"], bits, path)


def _member(path: Path, arrays: dict, name: str) -> np.ndarray:
    if name not in arrays:
        raise TractogramError(path, f"not a tractvq codes file (no {name!r} array)")
    return arrays[name]


def _read_metadata(path: Path, arrays: dict) -> dict:
    """The ``metadata`` member as a dict whose every field has the right type."""
    text = _member(path, arrays, "metadata")
    if text.dtype.kind != "U" or text.ndim != 0:
        raise TractogramError(path, "not a tractvq codes file (metadata is not a JSON string)")
    try:
        metadata = json.loads(str(text))
    except ValueError as error:
        raise TractogramError(path, f"not a tractvq codes file (metadata: {error})") from error
    if not isinstance(metadata, dict):
        raise TractogramError(path, "not a tractvq codes file (metadata is not a JSON object)")
    if metadata.get("format") != CODES_FORMAT:
        raise TractogramError(path, f"not a tractvq codes file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not _is_integer(version) or version < 1:
        raise TractogramError(path, f"bad codes format version {version!r}")
    if version > CODES_FORMAT_VERSION:
        raise TractogramError(path, f"codes format {version} is newer than this tractvq reads; update tractvq")
    model = metadata.get("model")
    if not (
        isinstance(model, dict)
        and isinstance(model.get("fingerprint"), str)
        and isinstance(model.get("config"), dict)
        and isinstance(model.get("source", ""), str)
    ):
        raise TractogramError(path, "metadata 'model' must hold a fingerprint, a config and a source")
    stored = metadata.get("stored") or ("latents" if "latents" in arrays else "indices")  # absent in version 1
    if stored not in ("indices", "latents"):
        raise TractogramError(path, f"metadata 'stored' must be 'indices' or 'latents', got {stored!r}")
    metadata["stored"] = stored
    if stored == "indices":
        bits, shape = metadata.get("index_bits"), metadata.get("index_shape")
        unpacked = "indices" in arrays  # format version 1: may not record its bits
        if not (bits is None and unpacked) and not (_is_integer(bits) and 1 <= bits <= 64):
            raise TractogramError(path, f"metadata 'index_bits' must be an integer in 1..64, got {bits!r}")
        if unpacked and shape is None:
            shape = list(arrays["indices"].shape[1:])
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_integer(n) and n >= 1 for n in shape)):
            raise TractogramError(path, f"metadata 'index_shape' must be two positive integers, got {shape!r}")
        metadata["index_bits"], metadata["index_shape"] = bits, shape
    return metadata


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
