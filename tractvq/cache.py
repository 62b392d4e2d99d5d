"""The training cache: every group of a dataset, its labels and its split, on disk.

A cache is a folder written by :func:`prepare`:

``groups.npz``
    All groups as one :class:`~tractvq.bundles.GroupedBundles` (see its ``save``).
``labels.npz``
    Per group: ``subject`` and ``bundle`` label (indices into the name lists of the
    manifest) and ``validation`` (bool).
``manifest.json``
    Settings, split, subjects and bundles with their counts, and the sources.

Nothing in it is pickled; :func:`load_cache` reads it back as a :class:`TrainingCache`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tractvq import __version__
from tractvq.bundles import GroupedBundles, GroupingSettings, coordinate_range, group, resample
from tractvq.errors import OutputError, TractogramError
from tractvq.io import ARRAY_MM_PER_UNIT, find_tractograms, read_npz, read_record
from tractvq.outputs import atomic_output, check_output, output_error

__all__ = ["TrainingCache", "load_cache", "prepare", "split_groups"]

_CACHE_FORMAT = "tractvq-cache"
_CACHE_VERSION = 1
#: Domain tag of the subsampling's random streams (:func:`split_groups` draws from the bare seed).
_SUBSAMPLE_STREAM = 1
#: What :func:`prepare` writes, all a cache folder holds.
_CACHE_FILES = ("groups.npz", "labels.npz", "manifest.json")


@dataclass
class TrainingCache:
    """A prepared dataset.

    Attributes
    ----------
    groups : GroupedBundles
        Every group of every bundle of every subject.
    subject_names, bundle_names : list of str
        Label vocabularies (sorted).
    subject_labels, bundle_labels : ndarray, shape (G,), int64
        Each group's subject and bundle, as indices into the vocabularies.
    validation : ndarray, shape (G,), bool
        The validation split.
    manifest : dict
        The content of ``manifest.json``.
    """

    groups: GroupedBundles
    subject_names: list[str]
    bundle_names: list[str]
    subject_labels: np.ndarray
    bundle_labels: np.ndarray
    validation: np.ndarray
    manifest: dict

    @property
    def settings(self) -> GroupingSettings:
        """The preprocessing the groups were made with."""
        return self.groups.settings

    def split(self, name: str) -> GroupedBundles:
        """The ``"train"`` or ``"validation"`` groups."""
        if name not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {name!r}")
        return self.groups.select(self.validation if name == "validation" else ~self.validation)


def split_groups(
    subject_labels: np.ndarray, validation_fraction: float, seed: int
) -> tuple[np.ndarray, str]:
    """Choose validation groups: whole subjects when there are several, else groups.

    Parameters
    ----------
    subject_labels : ndarray, shape (G,)
        Each group's subject.
    validation_fraction : float
        Fraction of subjects (or groups) held out, in [0, 1).
    seed : int
        Seed of the choice.

    Returns
    -------
    validation : ndarray, shape (G,), bool
    unit : {"subject", "group"}
        What was split.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    rng = np.random.default_rng(seed)
    subjects = np.unique(subject_labels)
    unit, items = ("subject", subjects) if len(subjects) > 1 else ("group", np.arange(len(subject_labels)))
    count = int(round(validation_fraction * len(items)))
    if validation_fraction > 0 and len(items) > 1:
        count = min(max(count, 1), len(items) - 1)
    chosen = rng.permutation(items)[:count]
    keys = subject_labels if unit == "subject" else np.arange(len(subject_labels))
    return np.isin(keys, chosen), unit


def prepare(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: GroupingSettings = GroupingSettings(),
    *,
    reference: str | os.PathLike | None = None,
    mm_per_unit: float = ARRAY_MM_PER_UNIT,
    validation_fraction: float = 0.1,
    seed: int = 0,
    holdout_bundles: Sequence[str] = (),
    validation_subjects: Sequence[str] = (),
    max_streamlines_per_bundle: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Turn tractograms into a training cache folder.

    Parameters
    ----------
    sources : sequence of str or os.PathLike
        TractoInferno roots, split or subject folders, plain folders or files (tractograms
        or published ``.npy`` arrays), as :func:`tractvq.io.find_tractograms` takes them.
    output : str or os.PathLike
        The cache folder to create.
    settings : GroupingSettings, optional
        Preprocessing. A ``global`` normalisation without a range gets the range of all
        sources (read in a first pass).
    reference : str or os.PathLike, optional
        Spatial reference for formats without one.
    mm_per_unit : float, optional
        Scale of published arrays (see :func:`tractvq.io.load_array`).
    validation_fraction : float, optional
        Held-out fraction: of subjects when there are several, else of groups. Not used
        when ``validation_subjects`` are named (the manifest records None then).
    seed : int, optional
        Seed of the split and of the subsampling.
    holdout_bundles : sequence of str, optional
        Bundles held out whole (every group of them is validation, for generalisation to
        unseen bundles); the other groups are split as above.
    validation_subjects : sequence of str, optional
        Subjects held out whole, instead of a random ``validation_fraction`` of them (for
        generalisation to chosen unseen subjects or datasets); at least one subject must
        be left for training.
    max_streamlines_per_bundle : int, optional
        Keep at most this many streamlines of each bundle (of each subject), a seeded
        random subset in file order, before grouping: bundles of thousands of streamlines
        then weigh no more than this in training. None keeps them all.
    force : bool, optional
        Replace an existing cache, whole: a folder holding nothing but a cache's files, or
        an empty one. Any other folder is refused, so that no file prepare did not write is
        deleted.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The cache folder.

    Raises
    ------
    TractogramError
        If a source cannot be found or read, or holds unusable streamlines; nothing is
        written then.
    OutputError
        If ``output`` exists and ``force`` is false, exists and is not a cache, or cannot
        be written.
    ValueError
        If an option is out of range, a held-out bundle or subject is not among the
        sources, or every subject is held out.
    """
    check_output(output, force=force, directory=True)
    _check_replaceable(Path(output))
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    if max_streamlines_per_bundle is not None and not (
        isinstance(max_streamlines_per_bundle, (int, np.integer)) and max_streamlines_per_bundle >= 1
    ):
        raise ValueError(
            f"max_streamlines_per_bundle must be an integer >= 1 or None, got {max_streamlines_per_bundle!r}"
        )
    if max_streamlines_per_bundle is not None:
        max_streamlines_per_bundle = int(max_streamlines_per_bundle)  # JSON for the manifest
    records = find_tractograms(*sources)
    subject_names = sorted({record.subject for record in records})
    bundle_names = sorted({record.bundle for record in records})
    holdout_bundles = _known("bundle", holdout_bundles, bundle_names)
    validation_subjects = _known("subject", validation_subjects, subject_names)
    if validation_subjects and len(validation_subjects) == len(subject_names):
        raise ValueError(
            f"cannot hold out every subject ({', '.join(validation_subjects)}): none would be left for training"
        )
    if settings.normalization == "global" and settings.minimum is None:
        ranges = [
            coordinate_range(resample(read_record(record, reference, mm_per_unit=mm_per_unit), settings.n_points, source=record.path))
            for record in tqdm(records, desc="range", unit="file", leave=False, disable=not progress)
        ]
        settings = replace(settings, minimum=min(r[0] for r in ranges), maximum=max(r[1] for r in ranges))
    parts, read = [], []
    # leave=False: a bar an error ends is erased, so the error is the only line shown.
    for number, record in enumerate(tqdm(records, desc="grouping", unit="file", leave=False, disable=not progress)):
        tractogram = read_record(record, reference, mm_per_unit=mm_per_unit)
        read.append(len(tractogram.streamlines))
        file_indices = None
        if max_streamlines_per_bundle is not None and read[-1] > max_streamlines_per_bundle:
            rng = np.random.default_rng((seed, _SUBSAMPLE_STREAM, number))
            chosen = np.sort(rng.permutation(read[-1])[:max_streamlines_per_bundle])
            tractogram = tractogram[chosen]
            file_indices = chosen if record.indices is None else record.indices[chosen]
        parts.append(group(tractogram, settings, subject=record.subject, name=record.bundle, path=record.path,
                           file_indices=file_indices))
    groups = GroupedBundles.concatenate(parts)
    subject_labels = np.array([subject_names.index(source.subject) for source in groups.sources])[groups.bundle_index]
    bundle_labels = np.array([bundle_names.index(source.name) for source in groups.sources])[groups.bundle_index]
    held_out = np.isin(bundle_labels, [bundle_names.index(name) for name in holdout_bundles])
    validation = held_out.copy()
    if validation_subjects:
        named = [subject_names.index(name) for name in validation_subjects]
        validation[~held_out], unit, validation_fraction = np.isin(subject_labels[~held_out], named), "subject", None
    else:
        validation[~held_out], unit = split_groups(subject_labels[~held_out], validation_fraction, seed)
    manifest = {
        "format": _CACHE_FORMAT,
        "format_version": _CACHE_VERSION,
        "tractvq_version": __version__,
        "settings": asdict(settings),
        "split": {"unit": unit, "validation_fraction": validation_fraction, "seed": seed,
                  "holdout_bundles": holdout_bundles, "validation_subjects": validation_subjects},
        "max_streamlines_per_bundle": max_streamlines_per_bundle,
        "groups": len(groups),
        "validation_groups": int(validation.sum()),
        "streamlines": sum(source.n_streamlines for source in groups.sources),
        "subjects": subject_names,
        "bundles": bundle_names,
        "sources": [
            {"subject": record.subject, "bundle": record.bundle, "path": os.fspath(record.path),
             "streamlines": source.n_streamlines, "streamlines_read": count}
            for record, source, count in zip(records, groups.sources, read)
        ],
    }
    with atomic_output(output, force=force, directory=True) as folder:
        groups.save(folder / "groups.npz")
        np.savez(
            folder / "labels.npz",
            subject=subject_labels.astype(np.int64),
            bundle=bundle_labels.astype(np.int64),
            validation=validation,
        )
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(output)


def _known(kind: str, names: Sequence[str], known: list[str]) -> list[str]:
    """``names`` sorted and deduplicated; a name not in ``known`` is a ValueError listing them."""
    names = sorted(set(names))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"cannot hold out {kind}(s) {', '.join(unknown)}: not among the sources' {kind}s ({', '.join(known)})"
        )
    return names


def _check_replaceable(output: Path) -> None:
    """Refuse an existing folder that is neither empty nor a tractvq cache (see ``force``
    in :func:`prepare`)."""
    if not output.is_dir():
        return
    try:
        names = set(os.listdir(output))
    except OSError as error:
        raise output_error(output, error) from error
    if names and not (names <= set(_CACHE_FILES) and _manifest_format(output) == _CACHE_FORMAT):
        raise OutputError(
            output, "is not a tractvq cache (it holds other files); refusing to replace it, even with --force"
        )


def _manifest_format(folder: Path) -> str | None:
    """The ``format`` recorded in ``folder/manifest.json``; None if there is none."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("format") if isinstance(manifest, dict) else None


def _labels(path: Path, labels: dict, name: str, count: int, vocabulary: int) -> np.ndarray:
    """The ``name`` array of ``labels.npz``: one per group, integers below ``vocabulary``
    (booleans for ``validation``)."""
    if name not in labels:
        raise TractogramError(path / "labels.npz", f"has no {name!r} array")
    values = labels[name]
    kind = "b" if name == "validation" else "iu"
    if values.shape != (count,) or values.dtype.kind not in kind:
        raise TractogramError(
            path / "labels.npz", f"{name!r} is {values.dtype} of shape {values.shape}, not one per group of groups.npz ({count})"
        )
    if name != "validation" and count and not 0 <= int(values.min()) <= int(values.max()) < vocabulary:
        raise TractogramError(path / "labels.npz", f"{name!r} labels fall outside the manifest's {vocabulary} names")
    return values


def load_cache(path: str | os.PathLike) -> TrainingCache:
    """Read a cache folder written by :func:`prepare`.

    Raises
    ------
    TractogramError
        If the folder is not a complete tractvq cache.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise TractogramError(path, "not a tractvq cache (no manifest.json); make one with `tractvq prepare`")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _CACHE_FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}")
    except (OSError, ValueError) as error:
        raise TractogramError(path, f"not a readable tractvq cache ({error})") from error
    labels = read_npz(path / "labels.npz", "tractvq cache's labels file")  # its errors name the file
    groups = GroupedBundles.load(path / "groups.npz")
    subject_labels, bundle_labels, validation = (
        _labels(path, labels, name, len(groups), len(manifest.get(vocabulary) or []))
        for name, vocabulary in (("subject", "subjects"), ("bundle", "bundles"), ("validation", None))
    )
    return TrainingCache(
        groups=groups,
        subject_names=list(manifest["subjects"]),
        bundle_names=list(manifest["bundles"]),
        subject_labels=subject_labels,
        bundle_labels=bundle_labels,
        validation=validation,
        manifest=manifest,
    )
