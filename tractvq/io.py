"""Reading and writing tractograms, and finding them in a dataset.

All tractogram I/O goes through DIPY's :func:`~dipy.io.streamline.load_tractogram` and
:func:`~dipy.io.streamline.save_tractogram`; tractvq adds what a user needs around them:

* one exception type, :class:`~tractvq.errors.TractogramError`, naming the file and the
  problem, where DIPY would log an error and return ``False`` or let a low-level error out;
* loading files that fail DIPY's bounding-box check (real files often do; :func:`summarize`
  reports how many streamlines leave the volume);
* atomic writes that never overwrite silently;
* discovery of the TractoInferno layout ``sub-*/tractography/sub-*__<BUNDLE>.trk``;
* the groups of a ``.trx`` file (pyAFQ writes one file per subject, one group per bundle)
  read as bundles (:func:`trx_groups`, :func:`find_tractograms`) and written back
  (:func:`save` with ``groups``);
* the published VQ-Diff arrays (``.npy`` of shape ``(N, 3, P)``) as a third source.

Every tractogram is returned as a :class:`~dipy.io.stateful_tractogram.StatefulTractogram`
in RASMM space (millimetres, NIfTI voxel-centre origin).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import queue
import re
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from dipy.io.utils import get_reference_info
from dipy.utils.tripwire import TripWireError
from nibabel.streamlines.tractogram_file import DataError, HeaderError

from tractvq.errors import OutputError, TractogramError
from tractvq.outputs import atomic_output

__all__ = [
    "ARRAY_EXTENSION",
    "ARRAY_MM_PER_UNIT",
    "TRACTOGRAM_EXTENSIONS",
    "UNGROUPED",
    "SpaceAttributes",
    "TractogramRecord",
    "TractogramStream",
    "array_to_tractogram",
    "check_group_name",
    "check_space_attributes",
    "dropped_data",
    "find_tractograms",
    "input_path",
    "load",
    "load_array",
    "make_tractogram",
    "read_npz",
    "read_record",
    "read_space_attributes",
    "save",
    "stream",
    "streams",
    "trx_groups",
]

#: Tractogram formats DIPY reads and writes, by extension.
TRACTOGRAM_EXTENSIONS = (".trk", ".tck", ".trx", ".vtk", ".vtp", ".fib", ".dpy")
#: Formats that carry their own spatial reference.
SELF_REFERENCED_EXTENSIONS = (".trk", ".trx")
#: Formats :func:`stream` reads chunk by chunk (nibabel reads them lazily).
STREAMED_EXTENSIONS = (".trk", ".tck")
#: Streamlines per chunk of :meth:`TractogramStream.chunks`.
STREAM_CHUNK = 50_000
#: Extension of the published VQ-Diff arrays, shape ``(N, 3, P)``.
ARRAY_EXTENSION = ".npy"
#: Millimetres per unit assumed for the published arrays. The paper min-max scaled all
#: coordinates of its training set to [-1, 1] and did not publish the two numbers; one unit
#: is about half the extent of a brain. See ``data/README.md``.
ARRAY_MM_PER_UNIT = 100.0
#: Reference grid for the published arrays: 1 mm voxels, 256^3, centred on the origin, so
#: that mm = ARRAY_MM_PER_UNIT * units lies inside it.
_ARRAY_GRID_SIZE = 256

#: Largest coordinate magnitude accepted, in millimetres (a brain spans about 200 mm).
MAX_COORDINATE_MM = 1e5
#: Bundle name of the streamlines of a grouped .trx file that are in no group ("_" is
#: appended while a group has that name).
UNGROUPED = "ungrouped"
#: Longest TRX group name accepted (it becomes a file name inside the archive).
_MAX_GROUP_NAME = 200

_TRACTOINFERNO_NAME = re.compile(r"^(?P<subject>sub-[^_]+)__(?P<bundle>.+)$")
_READ_ERRORS = (
    nib.spatialimages.HeaderDataError,
    DataError,
    HeaderError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    EOFError,
    struct.error,
    zipfile.BadZipFile,
    nib.filebasedimages.ImageFileError,
    np.linalg.LinAlgError,
    MemoryError,
    TripWireError,  # DIPY lacks an optional package for this format (e.g. VTK needs fury <= 1.0)
)

SpaceAttributes = tuple[np.ndarray, np.ndarray, np.ndarray, str]
"""``(affine, dimensions, voxel_sizes, voxel_order)`` as DIPY's ``space_attributes``."""


@dataclass(frozen=True)
class TractogramRecord:
    """One bundle found in a dataset: a tractogram file, or one group of a ``.trx`` file.

    Attributes
    ----------
    subject : str
        Subject identifier (``sub-XXXX`` in the TractoInferno layout, else the name of the
        folder holding the file, or of the folder above it when that one is
        ``tractography``).
    bundle : str
        Bundle name: the TRX group's name, :data:`UNGROUPED` for the streamlines of a grouped
        ``.trx`` in no group, else ``<BUNDLE>`` of ``sub-XXXX__<BUNDLE>.trk`` or the file stem.
    path : pathlib.Path
        The file.
    group : str or None
        The TRX group the bundle is (None for a whole file and for :data:`UNGROUPED`).
    indices : ndarray of int64 or None
        The bundle's streamlines among the file's, in the group's order (None: all of
        them, in file order).
    """

    subject: str
    bundle: str
    path: Path
    group: str | None = None
    indices: np.ndarray | None = field(default=None, compare=False, repr=False)


def _extension(path: Path) -> str:
    return path.suffix.lower()


@contextlib.contextmanager
def _dipy_log_messages() -> Iterator[list[str]]:
    """Collect what DIPY logs at error level while it works, to put it in our message."""
    messages: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("dipy")
    handler = _Collector(level=logging.ERROR)
    logger.addHandler(handler)
    previous_propagate = logger.propagate
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous_propagate


def input_path(value, what: str = "a tractogram") -> Path:
    """``value`` as a :class:`~pathlib.Path`, for the API's entry points.

    Raises
    ------
    TractogramError
        If ``value`` is not a path (``str`` or :class:`os.PathLike`).
    """
    if not isinstance(value, (str, os.PathLike)):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TractogramError(None, f"{what} is a file path (str or os.PathLike), got {type(value).__name__} {shown}")
    return Path(value)


#: Most bytes an archive member may expand to per byte it takes in the file (zip bombs).
_MAX_EXPANSION = 16


def read_npz(path: Path, kind: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, after checking the members' declared sizes.

    Each member's ``.npy`` header is read first: an object array, a size the member cannot
    hold (e.g. a header announcing 10^12 floats) or an archive that expands far beyond its
    size on disk is refused before anything is allocated.

    Parameters
    ----------
    path : pathlib.Path
        The archive.
    kind : str
        What the file should be, for messages (``"tractvq codes file"``).

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    TractogramError
        If the file is not a readable ``.npz`` archive (truncated, bad CRC, ...) or a member
        is refused.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(member.file_size for member in members) > _MAX_EXPANSION * max(path.stat().st_size, 1 << 20):
                raise TractogramError(path, f"not a {kind} (its members expand far beyond the file)")
            for member in members:
                _check_member_header(path, archive, member, kind)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except TractogramError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, MemoryError) as error:
        raise TractogramError(path, f"not a {kind} or damaged ({type(error).__name__}: {error})") from error


def _check_member_header(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, kind: str) -> None:
    if not member.filename.endswith(".npy"):
        raise TractogramError(path, f"not a {kind} (member {member.filename!r} is not an array)")
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise TractogramError(path, f"member {member.filename!r} has .npy format {version}, not 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream, max_header_size=10_000)
    if dtype.hasobject:
        raise TractogramError(path, f"member {member.filename!r} holds Python objects; refused")
    if math.prod(shape) * dtype.itemsize > member.file_size:
        raise TractogramError(
            path, f"member {member.filename!r} announces an array of shape {shape} that it does not hold"
        )


def _check_input_file(path: Path, extensions: tuple[str, ...]) -> None:
    if not path.exists():
        raise TractogramError(path, "no such file")
    if path.is_dir():
        raise TractogramError(path, "is a folder, not a tractogram file")
    if _extension(path) not in extensions:
        raise TractogramError(
            path,
            f"unsupported extension {path.suffix!r} (supported: {', '.join(extensions)})",
        )


def read_space_attributes(reference: str | os.PathLike) -> SpaceAttributes:
    """Read the spatial reference of a NIfTI image, a ``.trk`` or a ``.trx`` file.

    Parameters
    ----------
    reference : str or os.PathLike
        ``.nii``, ``.nii.gz``, ``.trk`` or ``.trx`` file.

    Returns
    -------
    tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)``.

    Raises
    ------
    TractogramError
        If the file is missing, of another kind, or unreadable.
    """
    path = Path(reference)
    if not path.exists():
        raise TractogramError(path, "reference file: no such file")
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz", ".trk", ".trx")):
        raise TractogramError(
            path, "a reference must be a NIfTI image (.nii, .nii.gz), a .trk or a .trx file"
        )
    if name.endswith(".trx"):
        _check_trx_structure(path)
    try:
        attributes = get_reference_info(str(path))
    except _READ_ERRORS as error:
        kind = ".nii.gz" if name.endswith(".nii.gz") else _extension(path)
        raise TractogramError(path, f"cannot read this {kind} file ({type(error).__name__}: {error})") from error
    return check_space_attributes(path, attributes)


def check_space_attributes(path: str | os.PathLike | None, space_attributes) -> SpaceAttributes:
    """Check a spatial reference: a finite, invertible affine, positive dimensions and
    voxel sizes, a voxel order of three axis letters.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file it comes from, named in the error.
    space_attributes : tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)``.

    Returns
    -------
    tuple
        The same, as arrays ``float64 (4, 4)``, ``int64 (3,)``, ``float64 (3,)`` and a str.

    Raises
    ------
    TractogramError
        Naming ``path`` and what is wrong.
    """
    try:
        affine, dimensions, voxel_sizes, voxel_order = space_attributes
        affine = np.asarray(affine, dtype=np.float64)
        dimensions = np.asarray(dimensions, dtype=np.float64)
        voxel_sizes = np.asarray(voxel_sizes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TractogramError(path, f"the spatial reference is not numeric ({error})") from error
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise TractogramError(path, "the spatial reference's affine is not a finite, invertible 4x4 matrix")
    if dimensions.shape != (3,) or not np.all((dimensions >= 1) & (dimensions <= 1 << 16) & (dimensions % 1 == 0)):
        raise TractogramError(path, f"the spatial reference's dimensions must be 3 positive integers, got {dimensions}")
    if voxel_sizes.shape != (3,) or not np.all(np.isfinite(voxel_sizes) & (voxel_sizes > 0)):
        raise TractogramError(path, f"the spatial reference's voxel sizes must be 3 positive numbers, got {voxel_sizes}")
    if isinstance(voxel_order, bytes):
        voxel_order = voxel_order.decode("latin-1")
    if not (isinstance(voxel_order, str) and len(voxel_order) == 3 and set(voxel_order.upper()) <= set("RLAPSI")):
        raise TractogramError(path, f"the spatial reference's voxel order must be 3 axis letters, got {voxel_order!r}")
    return affine, dimensions.astype(np.int64), voxel_sizes, voxel_order


def _check_trk_sizes(path: Path) -> None:
    """Refuse a .trk whose header announces more data than the file holds, before nibabel
    reads (and allocates for) it; the exact check follows the read."""
    with open(path, "rb") as handle:
        try:
            header = nib.streamlines.TrkFile._read_header(handle)
        except _READ_ERRORS as error:
            raise TractogramError(path, f"cannot read this .trk file ({type(error).__name__}: {error})") from error
    count = int(header[nib.streamlines.Field.NB_STREAMLINES])
    scalars = int(header[nib.streamlines.Field.NB_SCALARS_PER_POINT])
    properties = int(header[nib.streamlines.Field.NB_PROPERTIES_PER_STREAMLINE])
    if count < 0 or scalars < 0 or properties < 0:
        raise TractogramError(path, "the .trk header has a negative streamline, scalar or property count")
    if int(header["hdr_size"]) + count * (4 + 4 * properties) > path.stat().st_size:
        raise TractogramError(
            path, f"the header announces {count} streamlines with {properties} properties each: more than the file holds"
        )


def _trk_data_size(count: int, points: int, header: dict) -> int:
    """Bytes of a .trk's streamline data given what was read: ``count`` streamlines of
    ``points`` points in all, with the header's scalars and properties."""
    scalars = int(header[nib.streamlines.Field.NB_SCALARS_PER_POINT])
    properties = int(header[nib.streamlines.Field.NB_PROPERTIES_PER_STREAMLINE])
    return count * (4 + 4 * properties) + points * 4 * (3 + scalars)


def _check_trx_structure(path: Path) -> int:
    """Check a .trx archive's header against its arrays before trx-python maps them:
    counts, array sizes, and offsets that start at 0, never decrease and stay within the
    positions. Returns the streamline count."""
    try:
        with zipfile.ZipFile(path) as archive:
            header = json.loads(archive.read("header.json"))
            members = {Path(member.filename).name.split(".")[0]: member for member in archive.infolist()}
            positions, offsets = members.get("positions"), members.get("offsets")
            if not (isinstance(header, dict) and positions and offsets):
                raise TractogramError(path, "not a .trx file (no header, positions or offsets)")
            vertices, count = header.get("NB_VERTICES"), header.get("NB_STREAMLINES")
            offset_dtype = np.dtype(offsets.filename.rsplit(".", 1)[1])
            if not all(isinstance(value, int) and value >= 0 for value in (vertices, count)):
                raise TractogramError(path, "the .trx header's NB_VERTICES and NB_STREAMLINES must be counts")
            position_dtype = np.dtype(positions.filename.rsplit(".", 1)[1])
            if positions.file_size != vertices * 3 * position_dtype.itemsize:
                raise TractogramError(path, f"the .trx positions do not hold the {vertices} vertices its header announces")
            if offsets.file_size not in (count * offset_dtype.itemsize, (count + 1) * offset_dtype.itemsize):
                raise TractogramError(path, f"the .trx offsets do not hold the {count} streamlines its header announces")
            values = np.frombuffer(archive.read(offsets), dtype=offset_dtype).astype(np.int64)
    except TractogramError:
        raise
    except (KeyError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise TractogramError(path, f"cannot read this .trx file ({type(error).__name__}: {error})") from error
    if len(values) and (values[0] != 0 or np.any(np.diff(values) < 0) or values[-1] > vertices):
        raise TractogramError(path, "the .trx offsets must start at 0, never decrease and stay within the positions")
    return count


def check_group_name(path: str | os.PathLike | None, name) -> str:
    """Check a TRX group name (data read from a file, written back as the archive member
    ``groups/<name>.<dtype>``): a non-empty printable string of at most 200 characters
    without ``.``, ``/`` or ``\\``.

    Raises
    ------
    TractogramError
        Naming ``path`` and the name.
    """
    if not (
        isinstance(name, str) and name and name.isprintable() and len(name) <= _MAX_GROUP_NAME
        and not set(name) & set("./\\")
    ):
        raise TractogramError(
            path,
            f"TRX group name {str(name)[:_MAX_GROUP_NAME]!r} is not usable (it must be 1 to {_MAX_GROUP_NAME}"
            " printable characters without '.', '/' or '\\')",
        )
    return name


def trx_groups(path: str | os.PathLike) -> tuple[int, dict[str, np.ndarray]]:
    """The groups of a ``.trx`` file, read from the archive and checked.

    A group is a member ``groups/<NAME>.<dtype>`` (or ``groups/<NAME>.1.<dtype>``) holding
    the indices of its streamlines, as trx-python reads it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.trx`` file.

    Returns
    -------
    count : int
        The file's streamline count.
    groups : dict of str to ndarray of int64
        Each group's streamline indices, in the group's order; groups sorted by name.

    Raises
    ------
    TractogramError
        If the file is not a readable .trx, a member under ``groups/`` is not a group file
        (``groups/../x.uint32``, ``groups/.uint32``, ...), a group's name is not usable (see
        :func:`check_group_name`), its indices are not integers, repeat a streamline or
        point past the file's streamlines.
    """
    path = input_path(path)
    count = _check_trx_structure(path)
    groups: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.startswith("groups/") or member.is_dir():
                    continue
                groups.update(_read_group(path, archive, member, count, groups))
    except (KeyError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise TractogramError(path, f"cannot read the groups of this .trx file ({type(error).__name__}: {error})") from error
    return count, dict(sorted(groups.items()))


def _read_group(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, count: int, known) -> dict:
    """``{name: indices}`` of one ``groups/`` member of a .trx archive, checked."""
    parts = member.filename[len("groups/"):].split(".")
    if "/" in member.filename[len("groups/"):] or len(parts) not in (2, 3) or not parts[0] or parts[1:-1] not in ([], ["1"]):
        raise TractogramError(path, f"member {member.filename!r} is not a TRX group (groups/NAME.DTYPE)")
    name = check_group_name(path, parts[0])
    if name in known:
        raise TractogramError(path, f"TRX group {name!r} appears twice")
    try:
        dtype = np.dtype(parts[-1]).newbyteorder("<")
    except TypeError:
        dtype = np.dtype(bool)
    if dtype.kind not in "ui":
        raise TractogramError(path, f"TRX group {name!r} is stored as {parts[-1]!r}, not as integer indices")
    if member.file_size % dtype.itemsize or member.file_size > count * dtype.itemsize:
        raise TractogramError(path, f"TRX group {name!r} does not hold whole indices of at most {count} streamlines")
    indices = np.frombuffer(archive.read(member), dtype=dtype).astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise TractogramError(path, f"TRX group {name!r} points past the file's {count} streamlines")
    if len(np.unique(indices)) != len(indices):
        raise TractogramError(path, f"TRX group {name!r} lists a streamline twice")
    return {name: indices}


def _check_coordinates(path: Path, points: np.ndarray) -> None:
    """Refuse non-finite points ``(n, 3)`` and points beyond :data:`MAX_COORDINATE_MM`."""
    if not points.size:
        return
    low, high = points.min(), points.max()  # NaN if any is; no temporary of the data's size
    if not (np.isfinite(low) and np.isfinite(high)):
        raise TractogramError(path, "holds non-finite coordinates (NaN or infinity)")
    if max(-low, high) > MAX_COORDINATE_MM:
        raise TractogramError(
            path, f"holds coordinates of {max(-low, high):.3g} mm, beyond {MAX_COORDINATE_MM:.0e} mm: not a tractogram in mm"
        )


def _points(streamlines) -> np.ndarray:
    """All points ``(n, 3)`` of an ArraySequence: its buffer when that holds exactly them (as
    after loading), without the copy ``get_data()`` makes."""
    lengths = np.asarray(streamlines._lengths)
    packed = len(streamlines._data) == lengths.sum() and np.array_equal(
        streamlines._offsets, np.cumsum(lengths) - lengths
    )
    return streamlines._data if packed else streamlines.get_data()


def _checked_before_reading(path, reference) -> tuple[Path, SpaceAttributes]:
    """What :func:`load` and :func:`stream` check before reading a tractogram: the file, the
    reference a format needs, the header's counts, the spatial reference (the file's own or
    ``reference``). Returns the path and the spatial reference."""
    path = input_path(path)
    _check_input_file(path, TRACTOGRAM_EXTENSIONS)
    extension = _extension(path)
    if reference is None and extension not in SELF_REFERENCED_EXTENSIONS:
        raise TractogramError(
            path,
            f"{extension} files carry no spatial reference; pass reference= (--reference)"
            " with a NIfTI image or a .trk file in the same space",
        )
    if extension == ".trk":
        _check_trk_sizes(path)
    elif extension == ".trx":
        _check_trx_structure(path)
    return path, read_space_attributes(path if reference is None else reference)


def load(
    path: str | os.PathLike, reference: str | os.PathLike | None = None, *, check_coordinates: bool = True
) -> StatefulTractogram:
    """Load a tractogram with DIPY into RASMM space.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.trk``, ``.tck``, ``.trx``, ``.vtk``, ``.vtp``, ``.fib`` or ``.dpy`` file.
    reference : str or os.PathLike, optional
        The spatial reference (NIfTI image, ``.trk`` or ``.trx``). Required for formats that
        carry none (everything but ``.trk`` and ``.trx``); for those two, the file's own
        header is used when it is not given.
    check_coordinates : bool, optional
        Refuse non-finite coordinates and coordinates beyond :data:`MAX_COORDINATE_MM`
        (false only to report them, as :func:`tractvq.summary.summarize` does).

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram
        In RASMM space, NIfTI origin. Streamlines outside the reference volume are kept:
        see :func:`tractvq.summary.summarize` for their count.

    Raises
    ------
    TractogramError
        If the file is missing, has an unknown extension, needs a reference that was not
        given, or cannot be read (corrupt, truncated, bad header).
    """
    path, _ = _checked_before_reading(path, reference)
    extension = _extension(path)
    dipy_reference = "same" if reference is None else str(reference)
    with _dipy_log_messages() as messages:
        try:
            tractogram = load_tractogram(
                str(path),
                dipy_reference,
                to_space=Space.RASMM,
                to_origin=Origin.NIFTI,
                bbox_valid_check=False,
            )
        except _READ_ERRORS as error:
            raise TractogramError(
                path, f"cannot read this {extension} file ({type(error).__name__}: {error})"
            ) from error
    if tractogram is False:
        detail = "; ".join(messages) or "DIPY refused it"
        raise TractogramError(path, f"cannot load this {extension} file: {detail}")
    lengths = np.asarray(tractogram.streamlines._lengths)
    _check_streamline_count(path, len(lengths), int(lengths.sum()))
    if check_coordinates:
        _check_coordinates(path, _points(tractogram.streamlines))
    return tractogram


def _check_streamline_count(path: Path, count: int, points: int) -> None:
    """Catch files whose header disagrees with their data, which nibabel reads without
    complaint: truncated (fewer streamlines) or holding more than announced.

    Compares the count the header announces (``nb_streamlines`` of .trk, ``count`` of .tck;
    0 means unknown) with the ``count`` streamlines read, using nibabel's own header parser;
    for .trk, also the file's size with the size of what was read (``points`` in all).
    """
    file_format = nib.streamlines.detect_format(str(path))
    if file_format is None or _extension(path) not in STREAMED_EXTENSIONS:
        return
    with open(path, "rb") as handle:
        header = file_format._read_header(handle)
    announced = int(header.get(nib.streamlines.Field.NB_STREAMLINES) or header.get("count") or 0)
    if announced > 0 and announced != count:
        raise TractogramError(
            path,
            f"the header announces {announced} streamlines but the file holds {count}"
            " (truncated or corrupt file)",
        )
    if _extension(path) != ".trk":
        return
    expected_size = int(header["hdr_size"]) + _trk_data_size(count, points, header)  # Python ints: files > 2 GiB
    if expected_size != path.stat().st_size:
        raise TractogramError(
            path, f"the file holds more data than the {count} streamlines its header announces (corrupt header)"
        )


@dataclass(frozen=True)
class TractogramStream:
    """A ``.trk`` or ``.tck`` file read chunk by chunk (see :func:`stream`).

    Attributes
    ----------
    path : Path
    space_attributes : tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)`` of the file (``.trk``) or the
        reference.
    announced : int
        Streamlines the header announces (0: unknown).
    dropped : tuple of str
        What the file carries besides the points (``"data_per_point 'fa'"``, ...).
    """

    path: Path
    space_attributes: SpaceAttributes
    announced: int
    dropped: tuple[str, ...]

    def chunks(self, size: int | None = None, *, read_ahead: bool = True) -> Iterator[nib.streamlines.ArraySequence]:
        """The streamlines, ``size`` (default :data:`STREAM_CHUNK`) at a time, in RASMM
        millimetres (as :func:`load` gives them).

        Every chunk's coordinates are checked as :func:`load` checks them; after the last
        one, the count (and, for ``.trk``, the size) read is checked against the header.
        With ``read_ahead``, a helper thread reads the next chunk while the caller works on
        the current one (reading holds Python's lock; DIPY's resampling and numpy release it).

        Raises
        ------
        TractogramError
            If the file cannot be read, or a check fails.
        """
        chunks = self._read_chunks(STREAM_CHUNK if size is None else size)
        return _read_ahead(chunks) if read_ahead else chunks

    def _read_chunks(self, size: int) -> Iterator[nib.streamlines.ArraySequence]:
        lazy = _lazy_tractogram(self.path)
        to_rasmm = lazy.affine_to_rasmm if isinstance(lazy, _FileSpaceStreamlines) else None
        streamlines = iter(lazy.streamlines)
        count = points = 0
        while True:
            try:
                chunk = _packed(list(itertools.islice(streamlines, size)))
            except _READ_ERRORS as error:
                raise TractogramError(
                    self.path, f"cannot read this {_extension(self.path)} file ({type(error).__name__}: {error})"
                ) from error
            if not len(chunk):
                break
            if to_rasmm is not None:  # as nibabel's whole read: float64 arithmetic, float32 result
                chunk._data[:] = nib.affines.apply_affine(to_rasmm, chunk._data)
            _check_coordinates(self.path, chunk._data)
            count, points = count + len(chunk), points + len(chunk._data)
            yield chunk
        _check_streamline_count(self.path, count, points)


_END = object()  # the last item of a read-ahead queue


def _read_ahead(items: Iterator) -> Iterator:
    """``items``, each produced by a helper thread while the caller works on the previous
    one; the helper's exception is raised in the caller, and the helper stops when the
    caller does."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def hand(item) -> bool:
        while not stopped.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand((item, None)):
                    return
            hand((_END, None))
        except BaseException as error:  # noqa: BLE001 -- raised again in the caller's thread
            hand((None, error))

    threading.Thread(target=produce, name="tractvq-read-ahead", daemon=True).start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stopped.set()


def _packed(streamlines: list[np.ndarray]) -> nib.streamlines.ArraySequence:
    """An ArraySequence of ``streamlines`` in one float32 buffer (nibabel's appending
    constructor reallocates its buffer over and over: 10x slower on whole brains)."""
    packed = nib.streamlines.ArraySequence()
    if streamlines:
        lengths = np.fromiter(map(len, streamlines), dtype=np.intp, count=len(streamlines))
        packed._data = np.concatenate(streamlines).astype(np.float32, copy=False)
        packed._offsets = np.cumsum(lengths) - lengths
        packed._lengths = lengths
    return packed


class _FileSpaceStreamlines:
    """A .trk file's streamlines as stored (voxel mm), with the affine to RAS+ mm that
    nibabel would apply to each of them."""

    def __init__(self, lazy: nib.streamlines.LazyTractogram, affine_to_rasmm: np.ndarray):
        self.streamlines = lazy.apply_affine(np.linalg.inv(affine_to_rasmm)).streamlines
        self.affine_to_rasmm = affine_to_rasmm
        self.data_per_point, self.data_per_streamline = lazy.data_per_point, lazy.data_per_streamline


def _lazy_tractogram(path: Path) -> nib.streamlines.LazyTractogram | _FileSpaceStreamlines:
    """nibabel's lazy reading of a .tck file (RAS+ mm), or of a .trk file in its own space
    (the affine is applied per chunk rather than per streamline)."""
    try:
        loaded = nib.streamlines.load(str(path), lazy_load=True)
        to_rasmm = nib.streamlines.trk.get_affine_trackvis_to_rasmm(loaded.header) if _extension(path) == ".trk" else None
        if to_rasmm is None or not np.allclose(np.linalg.inv(to_rasmm) @ to_rasmm, np.eye(4)):
            return loaded.tractogram  # nibabel applies an ill-conditioned affine itself
        return _FileSpaceStreamlines(loaded.tractogram, to_rasmm)
    except _READ_ERRORS as error:
        raise TractogramError(path, f"cannot read this {_extension(path)} file ({type(error).__name__}: {error})") from error


def streams(path: str | os.PathLike, reference: str | os.PathLike | None = None) -> bool:
    """Whether :func:`stream` reads ``path``: a ``.tck``, or a ``.trk`` read in its own space
    (a ``.trk`` with a reference is loaded whole, which checks that the two agree)."""
    extension = _extension(Path(path))
    return extension == ".tck" or (extension == ".trk" and reference is None)


def stream(path: str | os.PathLike, reference: str | os.PathLike | None = None) -> TractogramStream:
    """Open a ``.trk`` or ``.tck`` file to read it chunk by chunk, never whole.

    The same streamlines, in the same space and order, as :func:`load` gives, with the same
    checks (the header's before reading, the coordinates chunk by chunk, the counts at the
    end), in memory that does not grow with the file: what
    :func:`tractvq.bundles.group_stream` keeps is the resampled points.

    Parameters
    ----------
    path : str or os.PathLike
        See :func:`streams`.
    reference : str or os.PathLike, optional
        Required for ``.tck``.

    Returns
    -------
    TractogramStream

    Raises
    ------
    TractogramError
        As :func:`load`.
    """
    path, space_attributes = _checked_before_reading(path, reference)
    if not streams(path, reference):
        raise TractogramError(path, "only .tck files, and .trk files without a reference, are read in chunks")
    tractogram = _lazy_tractogram(path)
    with open(path, "rb") as handle:
        header = nib.streamlines.detect_format(str(path))._read_header(handle)
    announced = int(header.get(nib.streamlines.Field.NB_STREAMLINES) or header.get("count") or 0)
    return TractogramStream(path, space_attributes, announced, dropped_data(tractogram))


def dropped_data(tractogram) -> tuple[str, ...]:
    """What a tractogram carries besides its points, which grouping leaves behind:
    ``"data_per_point 'fa'"``, ``"data_per_streamline 'weight'"``, ..."""
    return tuple(
        f"{kind} {key!r}"
        for kind, data in (("data_per_point", tractogram.data_per_point),
                           ("data_per_streamline", tractogram.data_per_streamline))
        for key in sorted(data)
    )


def array_reference(mm_per_unit: float = ARRAY_MM_PER_UNIT) -> SpaceAttributes:
    """The reference grid given to the published arrays.

    Parameters
    ----------
    mm_per_unit : float, optional
        Millimetres per array unit.

    Returns
    -------
    tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)``: 1 mm voxels, RAS, a grid that
        holds ``[-mm_per_unit, mm_per_unit]`` (at least 256 voxels) centred on the origin.
    """
    size = max(_ARRAY_GRID_SIZE, 2 * int(np.ceil(mm_per_unit)) + 2)
    affine = np.eye(4)
    affine[:3, 3] = -size / 2
    return affine, np.array([size] * 3, dtype=np.int16), np.ones(3, np.float32), "RAS"


def make_tractogram(streamlines, space_attributes: SpaceAttributes) -> StatefulTractogram:
    """Build a RASMM :class:`StatefulTractogram` from streamlines and a stored reference.

    Parameters
    ----------
    streamlines : sequence of ndarray (n_i, 3) or ndarray (N, P, 3)
        Coordinates in millimetres (RASMM).
    space_attributes : tuple
        ``(affine, dimensions, voxel_sizes, voxel_order)`` of the reference.

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram
    """
    affine, dimensions, voxel_sizes, voxel_order = space_attributes
    header = {
        "magic_number": b"TRACK",
        "voxel_to_rasmm": np.asarray(affine, dtype=np.float64),
        "dimensions": np.asarray(dimensions, dtype=np.int16),
        "voxel_sizes": np.asarray(voxel_sizes, dtype=np.float32),
        "voxel_order": str(voxel_order),
    }
    return StatefulTractogram(list(streamlines), header, Space.RASMM, origin=Origin.NIFTI)


def array_to_tractogram(
    array: np.ndarray, *, mm_per_unit: float = ARRAY_MM_PER_UNIT
) -> StatefulTractogram:
    """Turn a published VQ-Diff array into a tractogram in millimetres.

    Parameters
    ----------
    array : ndarray, shape (N, 3, P)
        Streamlines as xyz-by-points, in the paper's normalised units.
    mm_per_unit : float, optional
        Millimetres per unit (the paper's scale was not published; see
        :data:`ARRAY_MM_PER_UNIT`).

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram
        RASMM coordinates ``mm_per_unit * array`` on the grid of :func:`array_reference`.
    """
    points = np.ascontiguousarray(np.transpose(array, (0, 2, 1)), dtype=np.float32)  # (N, P, 3)
    return make_tractogram(points * np.float32(mm_per_unit), array_reference(mm_per_unit))


def load_array(
    path: str | os.PathLike, *, mm_per_unit: float = ARRAY_MM_PER_UNIT
) -> StatefulTractogram:
    """Load a published VQ-Diff array file (``.npy``, shape ``(N, 3, P)``).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    mm_per_unit : float, optional
        Millimetres per unit, see :func:`array_to_tractogram`.

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram

    Raises
    ------
    TractogramError
        If the file is missing, not a NumPy array file, holds objects (pickles are never
        loaded), or does not have the shape ``(N, 3, P)`` with ``P >= 2``.
    """
    path = input_path(path)
    _check_input_file(path, (ARRAY_EXTENSION,))
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise TractogramError(path, f"cannot read this .npy file ({error})") from error
    if array.ndim != 3 or array.shape[1] != 3 or array.shape[2] < 2:
        raise TractogramError(
            path, f"expected an array of shape (N, 3, P) with P >= 2, got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise TractogramError(path, f"expected floating-point coordinates, got {array.dtype}")
    tractogram = array_to_tractogram(array, mm_per_unit=mm_per_unit)
    _check_coordinates(path, _points(tractogram.streamlines))
    return tractogram


def save(
    tractogram: StatefulTractogram,
    path: str | os.PathLike,
    *,
    force: bool = False,
    groups: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a tractogram with DIPY (with trx-python for TRX groups), atomically.

    Parameters
    ----------
    tractogram : dipy.io.stateful_tractogram.StatefulTractogram
        What to write; its own reference is used.
    path : str or os.PathLike
        Output file; the extension picks the format (see :data:`TRACTOGRAM_EXTENSIONS`).
    force : bool, optional
        Replace an existing file.
    groups : dict of str to ndarray of int, optional
        TRX groups to write with it (name -> streamline indices); ``.trx`` files only.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputError
        If the file exists and ``force`` is false, or its folder is missing or not writable.
    TractogramError
        If the extension is not a tractogram format, ``groups`` are given for another format
        than ``.trx`` or DIPY cannot write the file.
    """
    path = Path(path)
    if _extension(path) not in TRACTOGRAM_EXTENSIONS:
        raise TractogramError(
            path,
            f"unsupported extension {path.suffix!r} (supported: {', '.join(TRACTOGRAM_EXTENSIONS)})",
        )
    if groups is not None and _extension(path) != ".trx":
        raise TractogramError(path, "only .trx files hold groups")
    if groups is not None:
        with atomic_output(path, force=force) as temporary:
            _save_trx(tractogram, temporary, groups)
        return path
    with atomic_output(path, force=force) as temporary, _dipy_log_messages() as messages:
        try:
            written = save_tractogram(tractogram, str(temporary), bbox_valid_check=False)
        except TripWireError as error:  # DIPY lacks an optional package for this format
            raise OutputError(path, f"cannot write {_extension(path)} files here ({error})") from error
        if written is False:
            detail = "; ".join(messages) or "DIPY refused it"
            raise TractogramError(path, f"cannot write this tractogram: {detail}")
    return path


def _save_trx(tractogram: StatefulTractogram, path: Path, groups: dict[str, np.ndarray]) -> None:
    """Write ``tractogram`` and its ``groups`` as the .trx file ``path`` with trx-python."""
    from trx import trx_file_memmap

    for name, indices in groups.items():
        check_group_name(path, name)
        if np.size(indices) and not 0 <= np.min(indices) <= np.max(indices) < len(tractogram.streamlines):
            raise TractogramError(path, f"group {name!r} points past the {len(tractogram.streamlines)} streamlines")
    trx = trx_file_memmap.TrxFile.from_sft(tractogram)
    try:
        trx.groups = {name: np.asarray(indices, dtype=np.uint32) for name, indices in groups.items()}
        trx_file_memmap.save(trx, str(path))
    finally:
        trx.close()


def _record_for_file(path: Path) -> TractogramRecord:
    match = _TRACTOINFERNO_NAME.match(path.name[: -len(path.suffix)] if path.suffix else path.name)
    if match:
        return TractogramRecord(match["subject"], match["bundle"], path)
    folder = path.parent.resolve()
    subject = folder.parent.name if folder.name == "tractography" and folder.parent.name else folder.name
    return TractogramRecord(subject, path.stem, path)


def _group_records(record: TractogramRecord) -> list[TractogramRecord]:
    """A grouped .trx file as one record per group, sorted by name, then one
    :data:`UNGROUPED` record for its streamlines in no group (if any); any other file as
    itself."""
    if _extension(record.path) != ".trx":
        return [record]
    count, groups = trx_groups(record.path)
    if not groups:
        return [record]
    records = [TractogramRecord(record.subject, name, record.path, name, indices) for name, indices in groups.items()]
    rest = np.setdiff1d(np.arange(count), np.concatenate(list(groups.values())))
    if rest.size:
        name = UNGROUPED
        while name in groups:
            name += "_"
        records.append(TractogramRecord(record.subject, name, record.path, None, rest))
    return records


def _is_input_file(path: Path) -> bool:
    return path.is_file() and _extension(path) in TRACTOGRAM_EXTENSIONS + (ARRAY_EXTENSION,)


def find_tractograms(*paths: str | os.PathLike) -> list[TractogramRecord]:
    """Find the tractograms under dataset roots, subject folders, plain folders or files.

    The TractoInferno layout ``sub-*/tractography/sub-*__<BUNDLE>.<ext>`` is searched at any
    depth below a folder (a dataset root with ``trainset/`` ``validset/`` ``testset/``, one
    split folder, or one subject folder); so is any tractogram in a ``tractography``
    folder (e.g. ``<subject>/tractography/<file>.trx`` as ``tractvq decode`` writes it). A
    folder without that layout is read as a plain folder of tractograms (and ``.npy``
    arrays), one bundle per file named by its stem.

    A ``.trx`` file with groups (as pyAFQ writes it: one group per bundle) gives one bundle
    per group, named by the group, and one :data:`UNGROUPED` bundle for its streamlines in
    no group, if any. A streamline in several groups is in each of their bundles.

    Parameters
    ----------
    *paths : str or os.PathLike
        Files or folders.

    Returns
    -------
    list of TractogramRecord
        Sorted by subject, then file, for each path in turn; the groups of a file
        together, by name.

    Raises
    ------
    TractogramError
        If a path does not exist, a folder holds no tractogram or the groups of a .trx
        file cannot be read (see :func:`trx_groups`).
    """
    records: list[TractogramRecord] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise TractogramError(path, "no such file or folder")
        if path.is_file():
            _check_input_file(path, TRACTOGRAM_EXTENSIONS + (ARRAY_EXTENSION,))
            records.extend(_group_records(_record_for_file(path)))
            continue
        folders = [path] if path.name == "tractography" else []
        found = [
            _record_for_file(file)
            for folder in folders + [folder for folder in path.rglob("tractography") if folder.is_dir()]
            for file in folder.iterdir()
            if _is_input_file(file)
        ]
        if not found:
            found = [_record_for_file(file) for file in path.iterdir() if _is_input_file(file)]
        if not found:
            raise TractogramError(
                path,
                "no tractography found (expected sub-*/tractography/sub-*__<BUNDLE>.trk"
                f" below it, or files with extensions {', '.join(TRACTOGRAM_EXTENSIONS)}"
                f" or {ARRAY_EXTENSION} in it)",
            )
        for record in sorted(found, key=lambda record: (record.subject, record.bundle)):
            records.extend(_group_records(record))
    return records


def read_record(
    record: TractogramRecord | str | os.PathLike,
    reference: str | os.PathLike | None = None,
    *,
    mm_per_unit: float = ARRAY_MM_PER_UNIT,
    check_coordinates: bool = True,
) -> StatefulTractogram:
    """Load a tractogram, one group of a .trx file or a published array file.

    The bundles of one grouped .trx file are read from one load of it: the last file
    loaded for a group is kept (one at a time) until another is.

    Parameters
    ----------
    record : TractogramRecord or str or os.PathLike
        What to read: a record with ``indices`` gives those streamlines of its file.
    reference : str or os.PathLike, optional
        See :func:`load`; ignored for ``.npy`` arrays.
    mm_per_unit : float, optional
        See :func:`load_array`; used for ``.npy`` arrays only.
    check_coordinates : bool, optional
        See :func:`load`.

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram
    """
    path = record.path if isinstance(record, TractogramRecord) else Path(record)
    if _extension(path) == ARRAY_EXTENSION:
        return load_array(path, mm_per_unit=mm_per_unit)
    if isinstance(record, TractogramRecord) and record.indices is not None:
        status = path.stat()
        version = (os.fspath(path.resolve()), status.st_mtime_ns, status.st_size)
        whole = _load_whole(path, version, reference and os.fspath(reference), check_coordinates)
        return _select(whole, record.indices)
    return load(path, reference, check_coordinates=check_coordinates)


@functools.lru_cache(maxsize=1)
def _load_whole(
    path: Path, version: tuple[str, int, int], reference: str | None, check_coordinates: bool
) -> StatefulTractogram:
    """:func:`load`, kept for the next group of the same file (``version``: its real path,
    modification time and size, so a changed file is read again)."""
    return load(path, reference, check_coordinates=check_coordinates)


def _select(tractogram: StatefulTractogram, indices: np.ndarray) -> StatefulTractogram:
    """The streamlines ``indices`` of ``tractogram`` (and their data), copied: the cached
    whole is never changed through them."""
    return StatefulTractogram.from_sft(
        tractogram.streamlines[indices].copy(),
        tractogram,
        data_per_point={key: value[indices].copy() for key, value in tractogram.data_per_point.items()},
        data_per_streamline={key: np.array(value[indices]) for key, value in tractogram.data_per_streamline.items()},
    )
