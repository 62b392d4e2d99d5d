"""Whole evaluations: run models on tractograms, or pair reconstructed files with their
originals, and score them into one table.

:func:`evaluate_models` encodes and decodes tractograms with each model and scores the
result; :func:`evaluate_reconstruction` groups original tractograms the published way, takes
the same rows of their reconstructions (tractograms or a codes file) and scores them. Scoring
itself is :mod:`tractvq.scoring`, BUAN and its protocols :mod:`tractvq.buan`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from tractvq.buan import Protocol
from tractvq.bundles import PAPER_SETTINGS, BundleSource, GroupedBundles, group_streamlines
from tractvq.bundles import coordinate_range as fitted_range
from tractvq.errors import TractogramError
from tractvq.scoring import (
    DEFAULT_METRICS,
    EvaluationTable,
    GroupScores,
    code_statistics,
    score_groups,
    summarize,
)

__all__ = ["evaluate_models", "evaluate_reconstruction", "model_label", "regroup_like", "run_model"]


def run_model(model, data: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray | None]:
    """Reconstruction ``(G, 3, S, P)`` of normalised groups, and the indices ``(G, h, w)``
    where the bottleneck gives them (None for continuous models)."""
    import torch

    model = model.eval().to(device)
    reconstructions, indices = [], []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(data[start:start + batch_size])).to(device)
            output = model(batch)
            reconstructions.append(output.reconstruction.float().cpu().numpy())
            if output.quantizer_output.indices is not None:
                indices.append(output.quantizer_output.indices.cpu().numpy())
    reconstruction = np.concatenate(reconstructions) if reconstructions else np.empty((0, *data.shape[1:]), np.float32)
    return reconstruction, (np.concatenate(indices) if indices else None)


def model_label(name, labels: list[str]) -> str:
    """A unique column label: a file's stem (its folder's name for a run's ``model.pt``), a
    shipped name, or ``model`` for an object."""
    if isinstance(name, (str, os.PathLike)):
        path = Path(name)
        label = os.fspath(name) if not path.suffix else path.parent.name if path.stem == "model" and path.parent.name else path.stem
    else:
        label = "default" if name is None else "model"
    unique, suffix = label, 2
    while unique in labels:
        unique, suffix = f"{label}-{suffix}", suffix + 1
    return unique


def _settings(protocol: Protocol, seed: int, metrics: Sequence[str], **extra) -> dict:
    return {"protocol": protocol.name, "units": protocol.units, "threshold": protocol.threshold,
            "clust_thr": list(protocol.clust_thr), "seed": seed, "metrics": list(metrics), **extra}


def evaluate_models(
    inputs: Sequence[str | os.PathLike],
    models: Sequence,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    reference: str | os.PathLike | None = None,
    coordinate_range: tuple[float, float] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[EvaluationTable, dict[str, GroupScores]]:
    """Encode, decode and score tractograms with several models side by side.

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Tractograms, subject folders or TractoInferno roots
        (:func:`tractvq.io.find_tractograms`).
    models : sequence
        Model names, files or objects (:func:`tractvq.encoding.resolve_model`); each
        groups the input with its own preprocessing.
    metrics, protocol, seed, workers
        See :func:`tractvq.scoring.score_groups`.
    reference, coordinate_range
        See :func:`tractvq.encoding.group_for_model`.
    batch_size, device, progress

    Returns
    -------
    table : EvaluationTable
    scores : dict of str to GroupScores
        Per model label.
    """
    from tractvq import io as tractvq_io
    from tractvq.encoding import group_for_model, resolve_model

    protocol = protocol or Protocol()
    records = tractvq_io.find_tractograms(*inputs)
    scores: dict[str, GroupScores] = {}
    for name in models or [None]:
        model, source = resolve_model(name)
        label = model_label(source or name, list(scores))
        groups = group_for_model(records, model, reference=reference, coordinate_range=coordinate_range, progress=progress)
        reconstruction, indices = run_model(model, groups.data, batch_size=batch_size, device=device)
        scores[label] = score_groups(
            groups, reconstruction, metrics=metrics, protocol=protocol, seed=seed, workers=workers,
            indices=indices, codebook_size=getattr(model.quantizer, "codebook_size", None), progress=progress,
        )
    return summarize(scores, metrics, settings=_settings(protocol, seed, metrics, inputs=[os.fspath(i) for i in inputs])), scores


def regroup_like(groups: GroupedBundles, streamlines: Sequence[np.ndarray]) -> np.ndarray:
    """Other streamlines of the same bundles put into ``groups``' layout.

    Parameters
    ----------
    groups : GroupedBundles
    streamlines : sequence of ndarray, shape (N_b, P, 3)
        One array per source of ``groups``, in millimetres, in the source's order (as
        :meth:`GroupedBundles.to_streamlines` returns them).

    Returns
    -------
    ndarray, shape (G, 3, S, P), float32
        Same rows, flips and normalisation as ``groups.data``.
    """
    if len(streamlines) != len(groups.sources):
        raise ValueError(f"{len(streamlines)} bundles for {len(groups.sources)} sources")
    points = np.empty(groups.data.shape[:1] + groups.data.shape[2:] + (3,))  # (G, S, P, 3)
    for index, bundle in enumerate(streamlines):
        selected = groups.bundle_index == index
        points[selected] = np.asarray(bundle, dtype=np.float64)[groups.streamline_index[selected]]
    points = np.where(groups.flipped[..., None, None], points[:, :, ::-1], points)
    normalised = (points - groups.offset[:, None, None, :]) / groups.scale[:, None, None, None]
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)).astype(np.float32)


def _read_streamlines(records, reference, n_points: int) -> list[np.ndarray]:
    from tractvq import io as tractvq_io
    from tractvq.bundles import resample

    streamlines = []
    for record in records:
        tractogram = tractvq_io.read_record(record, reference)
        tractogram.to_rasmm()
        tractogram.to_center()
        streamlines.append(resample(tractogram, n_points, source=record.path).astype(np.float64))
    return streamlines


def evaluate_reconstruction(
    original: Sequence[str | os.PathLike] | str | os.PathLike,
    reconstruction: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    settings=None,
    coordinate_range: tuple[float, float] | None = None,
    model=None,
    reference: str | os.PathLike | None = None,
    label: str = "reconstruction",
    progress: bool = False,
) -> tuple[EvaluationTable, dict[str, GroupScores]]:
    """Score reconstructed tractograms (or a codes file) against the originals.

    ``original`` is grouped (default: groups of 64 consecutive streamlines in the given
    order, no re-orientation or re-ordering, one global min-max normalisation to [-1, 1], the
    published preprocessing) and the same rows are taken from ``reconstruction``: streamline
    ``i`` of a reconstructed bundle must be the reconstruction of streamline ``i`` of the
    original.

    The ``paper`` protocol scores in that global normalisation, whose range is the whole
    training set's: it must be given (``coordinate_range``; ``(-100, 100)`` for the published
    arrays read at :data:`tractvq.io.ARRAY_MM_PER_UNIT` mm per unit), never fitted to the
    bundles in hand. The ``mm`` protocol scores BUAN and MDF in millimetres, where the range
    does not matter; without one it is fitted to the originals (the MSE depends on it).

    Parameters
    ----------
    original : path or sequence of paths
        Tractograms, folders (:func:`tractvq.io.find_tractograms`).
    reconstruction : path or sequence of paths
        The same bundles reconstructed (matched by subject and bundle name when several), or
        one ``.npz`` codes file, decoded with ``model`` or the model it names.
    metrics, protocol, seed, workers
        See :func:`tractvq.scoring.score_groups` (``perplexity`` and ``usage`` need a codes
        file of a discrete model).
    settings : GroupingSettings, optional
        How to group the originals (default :data:`tractvq.bundles.PAPER_SETTINGS`).
    coordinate_range : (float, float), optional
        Minimum and maximum (mm) of a ``global`` normalisation; replaces the range of
        ``settings``.
    model : optional
        Model of a codes file (default: the one the file names).
    reference : optional
        Spatial reference for formats without one.
    label : str, optional
        Column label.
    progress : bool, optional

    Returns
    -------
    table : EvaluationTable
    scores : dict of str to GroupScores

    Raises
    ------
    TractogramError
        If the bundles do not match or their streamline counts differ (naming both files).
    ValueError
        If the ``paper`` protocol meets a ``global`` normalisation without a range.
    """
    from tractvq import io as tractvq_io

    protocol = protocol or Protocol()
    settings = settings or PAPER_SETTINGS
    if coordinate_range is not None:
        settings = replace(settings, minimum=float(coordinate_range[0]), maximum=float(coordinate_range[1]))
    if protocol.name == "paper" and settings.normalization == "global" and settings.minimum is None:
        raise ValueError(
            "the paper protocol scores in the published global normalisation, whose range is not"
            " in the files: give coordinate_range (--range MIN MAX, in mm), e.g. -100 100 for the"
            " published arrays read at 100 mm per unit"
        )
    originals = [original] if isinstance(original, (str, os.PathLike)) else list(original)
    recons = [reconstruction] if isinstance(reconstruction, (str, os.PathLike)) else list(reconstruction)
    records = tractvq_io.find_tractograms(*originals)
    indices = codebook_size = None
    codes_file = len(recons) == 1 and Path(recons[0]).suffix.lower() == ".npz"
    if codes_file:
        from tractvq.codes import Codes
        from tractvq.encoding import _model_for_codes, decode_codes

        codes = Codes.load(recons[0])
        decoder = _model_for_codes(codes, model)
        decoded = codes.layout.to_streamlines(decode_codes(decoder, codes))
        recon_names = [(source.subject, source.name) for source in codes.layout.sources]
        recon_paths = [recons[0]] * len(recon_names)
        recon_streamlines = dict(zip(recon_names, decoded))
        settings = replace(settings, n_points=codes.layout.settings.n_points)
        codebook_size = getattr(decoder.quantizer, "codebook_size", None)
    else:
        recon_records = tractvq_io.find_tractograms(*recons)
        if len(recon_records) == len(records) == 1:
            recon_names = [(records[0].subject, records[0].bundle)]
        else:
            recon_names = [(record.subject, record.bundle) for record in recon_records]
        recon_paths = [record.path for record in recon_records]
        recon_streamlines = dict(zip(recon_names, _read_streamlines(recon_records, reference, settings.n_points)))
    recon_path = dict(zip(recon_names, recon_paths))
    points = _read_streamlines(records, reference, settings.n_points)
    if settings.normalization == "global" and settings.minimum is None:  # the mm protocol
        ranges = [fitted_range(bundle) for bundle in points]
        settings = replace(settings, minimum=min(r[0] for r in ranges), maximum=max(r[1] for r in ranges))
    parts, matched = [], []
    for record, bundle in zip(records, points):
        key = (record.subject, record.bundle)
        if key not in recon_streamlines:
            raise TractogramError(record.path, f"no reconstruction of bundle {record.bundle!r} (subject {record.subject!r}) in {', '.join(map(os.fspath, recons))}")
        other = recon_streamlines[key]
        if len(other) != len(bundle):
            raise TractogramError(
                record.path,
                f"has {len(bundle)} streamlines but its reconstruction {os.fspath(recon_path[key])} has {len(other)}:"
                " both must hold the same streamlines in the same order",
            )
        tractogram_source = BundleSource(record.subject, record.bundle, os.fspath(record.path), len(bundle), space_attributes=None)
        parts.append(group_streamlines(bundle.astype(np.float32), settings, source=tractogram_source))
        matched.append(other)
    groups = GroupedBundles.concatenate(parts)
    recon_data = regroup_like(groups, matched)
    if codes_file and codes.indices is not None and ({"perplexity", "usage"} & set(metrics)):
        indices = codes.indices
        # code statistics are per bundle of the codes' own layout
    result = score_groups(groups, recon_data, metrics=metrics, protocol=protocol, seed=seed, workers=workers, progress=progress)
    if indices is not None:
        names = np.asarray([codes.layout.sources[i].name for i in codes.layout.bundle_index])
        result.codes = {name: code_statistics(indices[names == name], codebook_size) for name in dict.fromkeys(names)}
        result.codes["all"] = code_statistics(indices, codebook_size)
    table = summarize({label: result}, metrics, settings=_settings(
        protocol, seed, metrics, original=[os.fspath(p) for p in originals], reconstruction=[os.fspath(p) for p in recons]))
    return table, {label: result}
