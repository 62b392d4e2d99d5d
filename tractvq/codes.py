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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tractvq import __version__
from tractvq.bundles import GroupedBundles
from tractvq.errors import TractogramError
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
    """

    layout: GroupedBundles
    indices: np.ndarray | None
    latents: np.ndarray | None
    model: dict
    index_bits: int | None = None

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
        force : bool, optional
            Replace an existing file.

        Returns
        -------
        pathlib.Path
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
        with atomic_output(path, force=force) as temporary:
            np.savez(
                temporary,
                metadata=np.array(json.dumps(metadata)),
                **stored,
                **self.layout.to_arrays(with_data=False),
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codes:
        """Read a codes file.

        Raises
        ------
        TractogramError
            If the file is missing, not a tractvq codes file, of a newer format, or
            inconsistent.
        """
        path = Path(path)
        if not path.is_file():
            raise TractogramError(path, "no such file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            metadata = json.loads(str(arrays["metadata"]))
        except (KeyError, ValueError, OSError, EOFError) as error:
            raise TractogramError(path, f"not a tractvq codes file ({error})") from error
        if metadata.get("format") != CODES_FORMAT:
            raise TractogramError(path, f"not a tractvq codes file (format {metadata.get('format')!r})")
        if metadata.get("format_version", 0) > CODES_FORMAT_VERSION:
            raise TractogramError(
                path, f"codes format {metadata['format_version']} is newer than this tractvq reads; update tractvq"
            )
        layout = GroupedBundles.from_arrays(arrays, path)
        try:
            indices, bits = arrays.get("indices"), metadata.get("index_bits")
            if "packed_indices" in arrays:
                indices = unpack_indices(arrays["packed_indices"], int(bits), tuple(metadata["index_shape"]))
            return cls(layout, indices, arrays.get("latents"), metadata["model"], bits)
        except (KeyError, TypeError, ValueError) as error:
            raise TractogramError(path, f"inconsistent codes file ({error})") from error
