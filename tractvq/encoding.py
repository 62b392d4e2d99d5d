"""The main job: tractograms to bundle codes and back, with a trained model.

::

    codes = encode(["data/sample"])                 # the default model
    codes.save("codes.npz")
    tractograms = decode(Codes.load("codes.npz"))   # one StatefulTractogram per bundle
    write_tractograms(tractograms, "decoded/")

Encoding applies the preprocessing the model records (``model.config.grouping``) unless
told otherwise; decoding returns exactly the input streamlines' count and order, in the
source space.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from tqdm.auto import tqdm

from tractvq import io
from tractvq.bundles import BundleSource, GroupedBundles, group, group_stream
from tractvq.codes import Codes, index_dtype
from tractvq.errors import ModelError, OutputError, TractogramError
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.checkpoint import load_model as read_model_file
from tractvq.models.checkpoint import model_fingerprint
from tractvq.outputs import (
    atomic_output,
    check_folder,
    check_inside,
    check_output,
    check_overwrite,
    merged_output,
)
from tractvq.weights import PACKAGED_MODELS, packaged_model_path

__all__ = [
    "decode",
    "decode_codes",
    "encode",
    "encode_groups",
    "group_for_model",
    "load_model",
    "plan_outputs",
    "reconstruct",
    "resolve_model",
    "write_arrays",
    "write_tractograms",
]

ModelLike = BundleAutoencoder | str | os.PathLike | None


def resolve_model(model: ModelLike = None) -> tuple[BundleAutoencoder, str]:
    """A model from a shipped name, a checkpoint path, or a model object.

    Parameters
    ----------
    model : BundleAutoencoder or str or os.PathLike or None
        None or ``"default"`` for the shipped default model, another shipped name (see
        :data:`tractvq.weights.PACKAGED_MODELS`), a checkpoint file, or a model.

    Returns
    -------
    model : BundleAutoencoder
        In evaluation mode.
    source : str
        How to find it again: the shipped name or the path ("" for an object).

    Raises
    ------
    ModelError
        If ``model`` is of another type, the name is not shipped in this installation or the
        file is not a model.
    """
    if isinstance(model, BundleAutoencoder):
        return model.eval(), ""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ModelError(
            None, f"a model is a shipped name, a checkpoint file or a BundleAutoencoder, got a {type(model).__name__}"
        )
    name = "default" if model is None else os.fspath(model)
    if name in PACKAGED_MODELS:
        path = packaged_model_path(name)
        if path is None:
            raise ModelError(name, "this installation ships no such model; give a model file with -m")
        return read_model_file(path), name
    if not Path(name).is_file():
        raise ModelError(
            name, f"no such model file (shipped models: {', '.join(PACKAGED_MODELS)})"
        )
    return read_model_file(name), name


def load_model(model: ModelLike = None) -> BundleAutoencoder:
    """A trained model, in evaluation mode: the shipped default when ``model`` is None.

    Parameters
    ----------
    model : str or os.PathLike or BundleAutoencoder or None, optional
        A shipped name (``"default"``, ``"discrete"``), a checkpoint file or a model.

    Returns
    -------
    BundleAutoencoder

    Raises
    ------
    ModelError
        See :func:`resolve_model`.
    """
    return resolve_model(model)[0]


def group_for_model(
    records: Sequence[io.TractogramRecord],
    model: BundleAutoencoder,
    *,
    reference: str | os.PathLike | None = None,
    coordinate_range: tuple[float, float] | None = None,
    normalization: str | None = None,
    mm_per_unit: float = io.ARRAY_MM_PER_UNIT,
    progress: bool = False,
) -> GroupedBundles:
    """Read and group tractograms with the preprocessing the model was trained with.

    Parameters
    ----------
    records : sequence of TractogramRecord
        What to read (see :func:`tractvq.io.find_tractograms`).
    model : BundleAutoencoder
    reference : str or os.PathLike, optional
        Spatial reference for formats without one.
    coordinate_range : (float, float), optional
        Minimum and maximum (mm) of a ``global`` normalisation; needed when the model does
        not record them (imported published models).
    normalization : {"group", "global", "none"}, optional
        Override the model's normalisation (``"none"``: coordinates are already in the
        model's units, e.g. published arrays read with ``mm_per_unit=1``).
    mm_per_unit : float, optional
        Scale of ``.npy`` arrays (see :func:`tractvq.io.load_array`).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    GroupedBundles

    Raises
    ------
    ValueError
        If a ``global`` normalisation has no range.
    """
    settings = model.config.grouping
    if normalization is not None:
        settings = replace(settings, normalization=normalization)
    if coordinate_range is not None:
        settings = replace(settings, minimum=float(coordinate_range[0]), maximum=float(coordinate_range[1]))
    if settings.normalization == "global" and settings.minimum is None:
        raise ValueError(
            "this model normalises globally but records no coordinate range (the published"
            " models' range was not published): give coordinate_range (--range MIN MAX),"
            " e.g. -100 100 for the sample data"
        )
    parts = [
        _group_record(record, settings, reference, mm_per_unit)
        for record in tqdm(records, desc="reading", unit="file", leave=False, disable=not progress)
    ]
    return GroupedBundles.concatenate(parts)


def _group_record(record: io.TractogramRecord, settings, reference, mm_per_unit: float) -> GroupedBundles:
    """The groups of one record: a whole .trk or .tck file read chunk by chunk
    (:func:`tractvq.io.stream`), anything else loaded whole."""
    if record.indices is None and io.streams(record.path, reference):
        return group_stream(io.stream(record.path, reference), settings, subject=record.subject, name=record.bundle)
    # The tractogram is passed without a name kept here, so group() frees its points before grouping.
    return group(io.read_record(record, reference, mm_per_unit=mm_per_unit), settings,
                 subject=record.subject, name=record.bundle, path=record.path,
                 trx_group=record.group, file_indices=record.indices)


def _input_paths(inputs) -> list:
    """``inputs`` as a non-empty list of paths (one path is taken for a list of one)."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if not isinstance(inputs, Iterable):
        io.input_path(inputs, "an input")  # raises, naming what was given
    inputs = list(inputs)
    if not inputs:
        raise TractogramError(None, "no inputs: give a tractogram, a folder of them or a dataset")
    return [io.input_path(item, "an input") for item in inputs]


def _model_and_groups(inputs, model: ModelLike, **grouping) -> tuple[BundleAutoencoder, str, GroupedBundles]:
    """What :func:`encode` and :func:`reconstruct` start with: the model and its source (see
    :func:`resolve_model`), then the groups of the tractograms found in ``inputs`` (see
    :func:`group_for_model`, which takes ``grouping``)."""
    model, source = resolve_model(model)
    return model, source, group_for_model(io.find_tractograms(*_input_paths(inputs)), model, **grouping)


def _batches(count: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def encode_groups(
    model: BundleAutoencoder, data: np.ndarray, *, batch_size: int = 64, device: str = "cpu", progress: bool = False
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Codes of normalised groups.

    Parameters
    ----------
    model : BundleAutoencoder
    data : ndarray, shape (G, 3, S, P)
    batch_size : int, optional
    device : str, optional
    progress : bool, optional

    Returns
    -------
    indices : ndarray (G, h, w) or None
        For discrete models (see :attr:`BundleAutoencoder.discrete`).
    latents : ndarray (G, h, w, D) float32 or None
        For continuous models.
    """
    # Channels-last convolutions encode about 25% faster on the CPU (benchmarks/bench_encode.py).
    model = model.eval().to(device, memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        for batch in tqdm(_batches(len(data), batch_size), desc="encoding", unit="batch", leave=False, disable=not progress):
            groups = torch.from_numpy(np.ascontiguousarray(data[batch])).to(device)
            output = model.encode(groups.contiguous(memory_format=torch.channels_last))
            kept = output.indices if model.discrete else output.quantized
            outputs.append(kept.cpu().numpy())
    stored = np.concatenate(outputs) if outputs else np.empty((0, *model.latent_shape[:2]))
    if model.discrete:
        return stored.astype(index_dtype(model.quantizer.codebook_size)), None
    return None, stored.astype(np.float32)


def decode_codes(
    model: BundleAutoencoder, codes: Codes, *, batch_size: int = 64, device: str = "cpu", progress: bool = False
) -> np.ndarray:
    """Normalised groups ``(G, 3, S, P)`` decoded from codes by ``model``."""
    model = model.eval().to(device)
    stored = codes.indices if codes.indices is not None else codes.latents
    decoded = []
    with torch.inference_mode():
        for batch in tqdm(_batches(len(stored), batch_size), desc="decoding", unit="batch", leave=False, disable=not progress):
            values = torch.from_numpy(np.ascontiguousarray(stored[batch])).to(device)
            groups = model.decode_indices(values.long()) if codes.indices is not None else model.decode(values)
            decoded.append(groups.float().cpu().numpy())
    return np.concatenate(decoded) if decoded else np.empty((0, *model.input_shape), np.float32)


def encode(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: ModelLike = None,
    *,
    reference: str | os.PathLike | None = None,
    coordinate_range: tuple[float, float] | None = None,
    normalization: str | None = None,
    mm_per_unit: float = io.ARRAY_MM_PER_UNIT,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> Codes:
    """Encode tractograms (files, subject folders, TractoInferno roots) into bundle codes.

    Parameters
    ----------
    inputs : str or os.PathLike or sequence of them
        One path or several, see :func:`tractvq.io.find_tractograms`.
    model : BundleAutoencoder or str or os.PathLike or None, optional
        See :func:`resolve_model`; default: the shipped default model.
    reference, coordinate_range, normalization, mm_per_unit
        See :func:`group_for_model`.
    batch_size : int, optional
        Groups per forward pass.
    device : str, optional
        ``"cpu"`` or ``"cuda"``.
    progress : bool, optional
        Show progress bars.

    Returns
    -------
    Codes
        Save it with :meth:`Codes.save`.
    """
    model, source, layout = _model_and_groups(
        inputs, model, reference=reference, coordinate_range=coordinate_range,
        normalization=normalization, mm_per_unit=mm_per_unit, progress=progress,
    )
    indices, latents = encode_groups(model, layout.data, batch_size=batch_size, device=device, progress=progress)
    identity = {"fingerprint": model_fingerprint(model), "config": model.config.to_dict(), "source": source}
    layout = GroupedBundles.from_arrays(layout.to_arrays(with_data=False))  # the input is not kept
    return Codes(layout, indices, latents, identity, model.bits_per_index or None)


def _model_for_codes(codes: Codes, model: ModelLike) -> BundleAutoencoder:
    """The model given, else the one the codes name; checked against the codes."""
    if model is None:
        source = codes.model.get("source") or None
        if source is None:
            raise ModelError(codes.path, "these codes do not say where their model is: give it with -m")
        model = source
    resolved, source = resolve_model(model)
    fingerprint = model_fingerprint(resolved)
    if fingerprint != codes.model.get("fingerprint"):
        raise ModelError(
            source or None,
            f"is not the model these codes were made with (model {fingerprint}, codes made by"
            f" {codes.model.get('fingerprint')} from {codes.model.get('source') or 'an in-memory model'})",
        )
    _check_codes_fit(codes, resolved)
    return resolved


def _check_codes_fit(codes: Codes, model: BundleAutoencoder) -> None:
    """Raise TractogramError naming the codes file unless its codes and layout are what
    ``model`` decodes: group shape, latent shape, index bits and range."""
    if codes.layout.data.shape[1:] != model.input_shape:
        raise TractogramError(
            codes.path, f"groups of shape {codes.layout.data.shape[1:]} do not fit the model's {model.input_shape}"
        )
    if codes.latents is not None:
        if model.discrete or codes.latents.shape[1:] != model.latent_shape:
            raise TractogramError(
                codes.path, f"latents of shape {codes.latents.shape[1:]} do not fit the model's {model.latent_shape}"
            )
        return
    if not model.discrete or codes.indices.shape[1:] != model.latent_shape[:2]:
        raise TractogramError(codes.path, f"indices of shape {codes.indices.shape[1:]} do not fit the model")
    if codes.index_bits is not None and codes.index_bits != model.bits_per_index:
        raise TractogramError(
            codes.path, f"indices stored with {codes.index_bits} bits, the model's take {model.bits_per_index}"
        )
    if codes.indices.size and int(codes.indices.max()) >= model.quantizer.codebook_size:
        raise TractogramError(
            codes.path, f"index {int(codes.indices.max())} is not below the codebook size {model.quantizer.codebook_size}"
        )


def decode(
    codes: Codes | str | os.PathLike, model: ModelLike = None, *, batch_size: int = 64, device: str = "cpu",
    progress: bool = False,
) -> list[StatefulTractogram]:
    """Decode codes into tractograms in their source space, one per bundle.

    Parameters
    ----------
    codes : Codes or str or os.PathLike
        Codes, or a codes file (read with :meth:`Codes.load`).
    model : BundleAutoencoder or str or os.PathLike or None, optional
        Default: the model the codes name; a given model must be that one (same fingerprint).
    batch_size, device, progress
        See :func:`encode`.

    Returns
    -------
    list of StatefulTractogram
        In the order of ``codes.layout.sources``; same streamline count and order as the
        encoded input.

    Raises
    ------
    ModelError
        If the model is not the one the codes were made with, or cannot be found.
    TractogramError
        If the codes do not fit the model, or decode to coordinates that are not finite or
        beyond :data:`tractvq.io.MAX_COORDINATE_MM` (nothing is returned to write).
    """
    if not isinstance(codes, Codes):
        codes = Codes.load(codes)
    model = _model_for_codes(codes, model)
    decoded = decode_codes(model, codes, batch_size=batch_size, device=device, progress=progress)
    tractograms = codes.layout.to_tractograms(decoded)
    for tractogram in tractograms:
        points = tractogram.streamlines.get_data()
        if not np.all(np.isfinite(points)) or (points.size and np.abs(points).max() > io.MAX_COORDINATE_MM):
            raise TractogramError(codes.path, "decodes to coordinates that are not finite or not in millimetres")
    return tractograms


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: ModelLike = None,
    *,
    reference: str | os.PathLike | None = None,
    coordinate_range: tuple[float, float] | None = None,
    normalization: str | None = None,
    mm_per_unit: float = io.ARRAY_MM_PER_UNIT,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[GroupedBundles, np.ndarray]:
    """Encode and decode in one go.

    Parameters
    ----------
    See :func:`encode`.

    Returns
    -------
    groups : GroupedBundles
        The input groups.
    reconstruction : ndarray, shape (G, 3, S, P)
        The decoded groups, normalised like ``groups.data``: turn them into tractograms with
        ``groups.to_tractograms(reconstruction)``.
    """
    model, _, groups = _model_and_groups(
        inputs, model, reference=reference, coordinate_range=coordinate_range,
        normalization=normalization, mm_per_unit=mm_per_unit, progress=progress,
    )
    with torch.inference_mode():
        model = model.eval().to(device)
        reconstruction = np.concatenate([
            model(torch.from_numpy(groups.data[batch]).to(device)).reconstruction.float().cpu().numpy()
            for batch in _batches(len(groups), batch_size)
        ])
    return groups, reconstruction


#: Longest subject or bundle name part of a decoded file's name (two fit in 255 bytes).
_MAX_NAME_PART = 100


def _name_part(name: str, default: str) -> str:
    """A subject or bundle name (read from a codes file: data, never a path) as a safe part
    of a file name: characters other than ASCII letters, digits, ``.``, ``_`` and ``-``
    become ``_``; leading dots and dashes go (no hidden file, no ``..``, nothing read as an
    option); at most :data:`_MAX_NAME_PART` characters; ``default`` if nothing is left."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in str(name))
    return safe.lstrip(".-")[:_MAX_NAME_PART] or default


#: Formats written back as they were read; other sources are written as .trk (it carries
#: its reference).
_KEPT_FORMATS = (".trk", ".tck", ".trx")


def _format(source: BundleSource) -> str:
    """The extension a decoded bundle is written with: its source's if kept, else .trk."""
    extension = Path(source.path).suffix.lower()
    return extension if extension in _KEPT_FORMATS else ".trk"


def _bundle_path(folder: Path, source: BundleSource) -> Path:
    """``<folder>/<subject>/tractography/<subject>__<bundle><format>`` with safe name parts."""
    subject, bundle = _name_part(source.subject, "sub-unknown"), _name_part(source.name, "bundle")
    return folder / subject / "tractography" / f"{subject}__{bundle}{_format(source)}"


def _trx_path(folder: Path, source: BundleSource) -> Path:
    """``<folder>/<subject>/tractography/<source file name>.trx`` with safe name parts."""
    subject = _name_part(source.subject, "sub-unknown")
    return folder / subject / "tractography" / f"{_name_part(Path(source.path).stem, 'tractogram')}.trx"


@dataclass(frozen=True)
class _Output:
    """One file to write: the bundles ``members`` (indices into the sources), as one .trx
    with its groups when ``grouped``."""

    path: Path
    members: tuple[int, ...]
    grouped: bool


def _from_one_trx(source: BundleSource) -> tuple[str, str] | None:
    """``(subject, file)`` of a bundle read from a grouped .trx file (None for others)."""
    if source.file_indices is None or Path(source.path).suffix.lower() != ".trx":
        return None
    return source.subject, source.path


def _outputs(sources: Sequence[BundleSource], output: Path) -> list[_Output]:
    """The files to write (before any check): the bundles of one grouped .trx together,
    each other bundle alone."""
    if output.suffix.lower() in io.TRACTOGRAM_EXTENSIONS:
        files = {_from_one_trx(source) for source in sources}
        if len(files) == 1 and None not in files and output.suffix.lower() == ".trx":
            return [_Output(output, tuple(range(len(sources))), True)]
        if len(sources) != 1:
            grouped = " or a .trx file" if len(files) == 1 and None not in files else ""
            raise OutputError(output, f"{len(sources)} bundles cannot go into one file: give a folder{grouped} instead")
        return [_Output(output, (0,), False)]
    if output.suffix:
        raise OutputError(output, f"unsupported extension {output.suffix!r} (give a tractogram file or a folder)")
    planned: list[tuple[Path, list[int], bool]] = []
    trx_members: dict[tuple[str, str], list[int]] = {}  # the lists of ``planned``, filled as found
    for index, source in enumerate(sources):
        file = _from_one_trx(source)
        if file is None:
            planned.append((_bundle_path(output, source), [index], False))
        elif file in trx_members:
            trx_members[file].append(index)
        else:
            trx_members[file] = [index]
            planned.append((_trx_path(output, source), trx_members[file], True))
    return [_Output(path, tuple(members), grouped) for path, members, grouped in planned]


def plan_outputs(sources: Sequence[BundleSource], output: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Where decoded bundles go, checked before any work: one file, or a folder in
    TractoInferno layout ``<folder>/<subject>/tractography/<subject>__<bundle><ext>``.

    Each bundle is written in its source's format (.trk, .tck or .trx; .trk for others).
    The bundles of one grouped .trx file (its groups, and its streamlines in no group) go
    back into one .trx file, ``<folder>/<subject>/tractography/<its file name>`` or the
    ``.trx`` file given: same streamline count and order, same groups with the same
    members. A streamline in several groups was encoded once per group; the file holds the
    decoding of its first group (by name). Per-point and per-streamline data are not
    encoded, so not written (:attr:`BundleSource.dropped` names them).

    Subject, bundle and file names come from the codes file: they are data, never paths. In
    a folder each becomes a safe file name part (``sub-01``, ``AF_L`` stay as they are;
    other characters become ``_``, leading dots and dashes go, at most 100 characters),
    and every file is checked to stay inside the folder, symbolic links followed.

    Parameters
    ----------
    sources : sequence of BundleSource
        The bundles (their subjects, names and source files).
    output : str or os.PathLike
        A tractogram file (one bundle, or the bundles of one grouped .trx into a .trx) or a
        folder (created with its missing parents).
    force : bool, optional
        Allow replacing existing files.

    Returns
    -------
    list of pathlib.Path
        One per file to write.

    Raises
    ------
    OutputError
        If several bundles are to go into one file (but those of one .trx into a .trx), the
        extension is unknown, two files would share a name (also once their names are made
        safe), a file would lie outside the folder, the output cannot be written (see
        :func:`tractvq.outputs.check_output`, :func:`tractvq.outputs.check_folder`), or a
        file exists without ``force`` (or is not a regular file).
    """
    return [planned.path for planned in _checked_outputs(sources, Path(output), force=force)]


def _checked_outputs(sources: Sequence[BundleSource], output: Path, *, force: bool) -> list[_Output]:
    """:func:`_outputs`, each file checked as :func:`plan_outputs` says."""
    outputs = _outputs(sources, output)
    if output.suffix:
        check_output(output, force=force)
        return outputs
    check_folder(output)
    owners: dict[Path, BundleSource] = {}
    for planned in outputs:
        source = sources[planned.members[0]]
        if planned.path in owners:
            first = owners[planned.path]
            raise OutputError(
                output,
                f"bundles {first.subject!r} {first.name!r} and {source.subject!r} {source.name!r}"
                f" would both be written to {planned.path.relative_to(output)}",
            )
        owners[planned.path] = source
        check_inside(planned.path, output)
        check_overwrite(planned.path, force=force)
    return outputs


def _trx_contents(
    tractograms: Sequence[StatefulTractogram], sources: Sequence[BundleSource]
) -> tuple[StatefulTractogram, dict[str, np.ndarray]]:
    """The streamlines of one .trx file in its order (each from the first bundle holding
    it) and its groups' indices into them."""
    indices = np.concatenate([source.file_indices for source in sources])
    streamlines = [streamline for tractogram in tractograms for streamline in tractogram.streamlines]
    kept, first = np.unique(indices, return_index=True)
    tractogram = io.make_tractogram([streamlines[index] for index in first], sources[0].space_attributes)
    groups = {
        source.group: np.searchsorted(kept, source.file_indices) for source in sources if source.group is not None
    }
    return tractogram, groups


def write_tractograms(
    tractograms: Sequence[StatefulTractogram],
    sources: Sequence[BundleSource],
    output: str | os.PathLike,
    *,
    force: bool = False,
) -> list[Path]:
    """Write decoded bundles where :func:`plan_outputs` says, all of them or none.

    A folder is written through :func:`tractvq.outputs.merged_output`: a new folder appears
    whole by one rename; into an existing one the files are moved once all are written, and
    a failure or Ctrl-C undoes the moves. Files of the folder not written here are never
    touched.

    Parameters
    ----------
    tractograms : sequence of StatefulTractogram
        One per source, in the same order.
    sources, output, force
        See :func:`plan_outputs`.

    Returns
    -------
    list of pathlib.Path
        The written files.

    Raises
    ------
    OutputError
        See :func:`plan_outputs`; also if writing fails (no space left, ...): nothing is
        written then.
    """
    if len(tractograms) != len(sources):
        raise ValueError(f"{len(tractograms)} tractograms for {len(sources)} bundles")
    output = Path(output)
    outputs = _checked_outputs(sources, output, force=force)
    if output.suffix:
        _write_one(outputs[0], tractograms, sources, output, force=force)
        return [output]
    with merged_output(output, force=force) as folder:
        for planned in outputs:
            written = folder / planned.path.relative_to(output)
            written.parent.mkdir(parents=True, exist_ok=True)
            _write_one(planned, tractograms, sources, written, force=False)
    return [planned.path for planned in outputs]


def _write_one(planned: _Output, tractograms, sources, path: Path, *, force: bool) -> None:
    """Write the bundles of ``planned`` to ``path``."""
    if not planned.grouped:
        io.save(tractograms[planned.members[0]], path, force=force)
        return
    tractogram, groups = _trx_contents(
        [tractograms[index] for index in planned.members], [sources[index] for index in planned.members]
    )
    io.save(tractogram, path, force=force, groups=groups)


def write_arrays(
    groups: GroupedBundles, reconstruction: np.ndarray, output: str | os.PathLike, *, mm_per_unit: float, force: bool = False
) -> Path:
    """Write one reconstructed bundle as a published-layout array ``(N, 3, P)``.

    The coordinates are millimetres divided by ``mm_per_unit`` (1 for arrays read with
    ``normalization="none"`` and ``mm_per_unit=1``: the model's own units).

    Raises
    ------
    OutputError
        If the groups hold more than one bundle, or the file exists without ``force``.
    """
    if len(groups.sources) != 1:
        raise OutputError(output, f"{len(groups.sources)} bundles cannot go into one .npy file")
    (streamlines,) = groups.to_streamlines(reconstruction)  # (N, P, 3) mm
    array = (streamlines / mm_per_unit).transpose(0, 2, 1).astype(np.float32)
    with atomic_output(output, force=force) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)  # to the file given: np.save would append .npy to another name
    return Path(output)

