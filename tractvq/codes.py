"""The codes file: a tractogram's bundle codes and everything needed to decode them.

A codes file is an uncompressed ``.npz`` (read with ``allow_pickle=False``) holding

``metadata``
    JSON: format and version, tractvq version, the model's identity (fingerprint, config,
    and the name or path it was given as), and which codes are stored.
``indices`` (G, h, w) unsigned integers, for discrete models
    The code of every latent position of every group (the smallest unsigned type that
    holds the codebook size).
``latents`` (G, h, w, D) float32, for continuous models
    The quantized latents.
the arrays of :meth:`tractvq.bundles.GroupedBundles.to_arrays` without ``data``
    group->streamline map and mask, flips, normalisation, bundle names and source headers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tractvq import __version__
from tractvq.bundles import GroupedBundles
from tractvq.errors import TractogramError
from tractvq.outputs import atomic_output

__all__ = ["Codes", "index_dtype"]

CODES_FORMAT = "tractvq-codes"
CODES_FORMAT_VERSION = 1


def index_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds indices below ``codebook_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


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
    """

    layout: GroupedBundles
    indices: np.ndarray | None
    latents: np.ndarray | None
    model: dict

    def __post_init__(self):
        if (self.indices is None) == (self.latents is None):
            raise ValueError("codes hold either indices or latents, exactly one of them")
        stored = self.indices if self.indices is not None else self.latents
        if len(stored) != len(self.layout):
            raise ValueError(f"{len(stored)} coded groups for {len(self.layout)} groups")

    @property
    def nbytes(self) -> int:
        """Bytes of the stored codes (indices or latents) alone."""
        return int((self.indices if self.indices is not None else self.latents).nbytes)

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
        stored = {"indices": self.indices} if self.indices is not None else {"latents": self.latents}
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
            return cls(layout, arrays.get("indices"), arrays.get("latents"), metadata["model"])
        except (KeyError, ValueError) as error:
            raise TractogramError(path, f"inconsistent codes file ({error})") from error
