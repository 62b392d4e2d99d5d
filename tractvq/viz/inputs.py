"""What to show: a bundle from a tractogram, a dataset folder or a codes file, and groups by name.

* :func:`load_bundle` reads one bundle's streamlines in millimetres (RASMM) from a tractogram
  (``.trk``, ``.tck``, ``.trx``, ... or a published ``.npy`` array), a ``.trx`` file with
  groups or a folder of tractograms (one bundle picked by name), or a codes file (decoded
  with its model).
* :func:`parse_group` turns ``BUNDLE:INDEX`` into a group of :class:`~tractvq.bundles.GroupedBundles`,
  and :func:`group_streamlines` gives that group's streamlines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tractvq.errors import TractogramError

__all__ = ["ShownBundle", "group_label", "group_streamlines", "load_bundle", "parse_group"]


@dataclass(frozen=True)
class ShownBundle:
    """One bundle to draw.

    Attributes
    ----------
    label : str
        A short title: the file's name, or ``BUNDLE (file or folder)``.
    streamlines : list of ndarray, shape (P_i, 3)
        Millimetres, RASMM, in the file's order.
    path : pathlib.Path
        Where it came from.
    """

    label: str
    streamlines: list[np.ndarray] = field(repr=False)
    path: Path


def _pick(path: Path, names: list[str], bundle: str | None) -> int:
    """Index of ``bundle`` among ``names`` (the only one when ``bundle`` is None)."""
    if bundle is None:
        if len(names) == 1:
            return 0
        raise TractogramError(
            path, f"holds {len(names)} bundles ({', '.join(names)}): choose one with bundle= (--bundle NAME)"
        )
    matches = [index for index, name in enumerate(names) if name == bundle]
    if not matches:
        raise TractogramError(path, f"has no bundle {bundle!r} (it has {', '.join(names)})")
    if len(matches) > 1:
        raise TractogramError(path, f"holds {len(matches)} bundles named {bundle!r} (several subjects): give one file")
    return matches[0]


def load_bundle(path: str | os.PathLike, *, bundle: str | None = None, reference: str | os.PathLike | None = None,
                model=None) -> ShownBundle:
    """Read one bundle to draw.

    Parameters
    ----------
    path : str or os.PathLike
        A tractogram file, a published ``.npy`` array, a folder of tractograms (a subject
        or dataset in the TractoInferno layout, or a plain folder), or a codes file
        (``.npz`` from ``tractvq encode``).
    bundle : str, optional
        The bundle's name in a folder, a codes file or a ``.trx`` file with groups holding
        several (a TRX group's name; ignored for other tractogram files).
    reference : str or os.PathLike, optional
        Spatial reference for formats without one (``.tck``, ...).
    model : str or os.PathLike or BundleAutoencoder, optional
        Decoder of a codes file (default: the model the file names).

    Returns
    -------
    ShownBundle

    Raises
    ------
    TractogramError
        If the path cannot be read, a folder or codes file holds several bundles and
        ``bundle`` does not pick one, or there is nothing to draw (no streamlines, or
        streamlines of fewer than two points).
    """
    from tractvq import io

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        from tractvq.codes import Codes
        from tractvq.encoding import decode

        codes = Codes.load(path)
        names = [source.name for source in codes.layout.sources]
        index = _pick(path, names, bundle)
        tractogram = decode(codes, model)[index]
        return _shown(f"{names[index]} ({path.name})", tractogram, path)
    records = io.find_tractograms(path)
    if path.is_file() and len(records) == 1:
        (record,) = records
        label = path.name
    else:
        record = records[_pick(path, [r.bundle for r in records], bundle)]
        label = f"{record.bundle} ({path.name})"
    tractogram = io.read_record(record, reference)
    return _shown(label, tractogram, record.path)


def _shown(label: str, tractogram, path: Path) -> ShownBundle:
    """A bundle to draw, refused (TractogramError naming ``path``) if there is nothing to draw."""
    streamlines = [np.asarray(streamline, np.float64) for streamline in tractogram.streamlines]
    if not streamlines:
        raise TractogramError(path, "holds no streamlines: nothing to draw")
    short = [index for index, streamline in enumerate(streamlines) if len(streamline) < 2]
    if short:
        raise TractogramError(
            path, f"{len(short)} streamline(s) have fewer than two points (first: {short[0]}): nothing to draw"
        )
    return ShownBundle(label, streamlines, path)


def parse_group(groups, text: str | None) -> int:
    """The group ``BUNDLE:INDEX`` names: the INDEX-th group (from 0) of bundle BUNDLE.

    Parameters
    ----------
    groups : GroupedBundles
    text : str or None
        ``"MCP:3"``, ``"MCP"`` (its first group) or None (the first group of all).

    Returns
    -------
    int
        Index into ``groups``.

    Raises
    ------
    ValueError
        For an unknown bundle or an index out of range (the message lists what exists).
    """
    if text is None:
        return 0
    name, _, number = text.rpartition(":") if ":" in text else (text, "", "0")
    names = groups.bundle_names
    counts = {n: int(np.sum(groups.bundle_index == i)) for i, n in enumerate(names)}
    if name not in counts:
        raise ValueError(f"no bundle {name!r} (bundles: {', '.join(f'{n} ({c} groups)' for n, c in counts.items())})")
    try:
        index = int(number)
    except ValueError as error:
        raise ValueError(f"expected BUNDLE:INDEX with an integer INDEX, got {text!r}") from error
    members = np.flatnonzero(groups.bundle_index == names.index(name))
    if not 0 <= index < len(members):
        raise ValueError(f"bundle {name} has {len(members)} groups (0 to {len(members) - 1}), got index {index}")
    return int(members[index])


def group_label(groups, index: int) -> str:
    """``BUNDLE:INDEX`` of group ``index`` (the inverse of :func:`parse_group`)."""
    bundle = int(groups.bundle_index[index])
    position = int(np.sum(groups.bundle_index[:index] == bundle))
    return f"{groups.sources[bundle].name}:{position}"


def group_streamlines(groups, index: int, data: np.ndarray | None = None) -> np.ndarray:
    """The streamlines of one group in millimetres, repeated rows left out.

    Parameters
    ----------
    groups : GroupedBundles
    index : int
        The group.
    data : ndarray, shape (G, 3, S, P), optional
        Normalised groups (a model's decoding); default ``groups.data``.

    Returns
    -------
    ndarray, shape (n, P, 3), float64
    """
    data = groups.data if data is None else np.asarray(data)
    if data.shape != groups.data.shape:
        raise ValueError(f"expected groups of shape {groups.data.shape}, got {data.shape}")
    points = data[index].transpose(1, 2, 0).astype(np.float64)  # (S, P, 3)
    points = points * groups.scale[index] + groups.offset[index]
    return points[groups.mask[index]]
