"""How robust a bundle model is: latent perturbations, streamline order, unseen bundles.

* :func:`perturbation_study`: add noise to every group's latents and score the decoded
  bundles against the originals (BUAN and MDF), for Gaussian noise of each size ``eps``
  (``latent + eps * N(0, 1)``) and for the published directional sweep
  (``latent + alpha * 0.5`` for ``alpha`` in ``linspace(-1, 1, 9)``).
* :func:`permutation_study`: shuffle the streamlines inside each group before encoding (the
  2-D convolutions see the row order) and compare the scores with the canonical order.
* :func:`generalisation_study`: score the validation groups of a cache, separating bundles the
  model never saw (``tractvq prepare --holdout-bundle NAME``) from held-out groups of seen
  bundles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tractvq.buan import Protocol
from tractvq.bundles import GroupedBundles
from tractvq.evaluate import run_model
from tractvq.outputs import atomic_output
from tractvq.scoring import DEFAULT_METRICS, EvaluationTable, GroupScores, score_groups, summarize

__all__ = [
    "PUBLISHED_ALPHAS",
    "PUBLISHED_STEP",
    "PerturbationResult",
    "decode_latents",
    "directional_perturbation",
    "encode_latents",
    "gaussian_perturbation",
    "generalisation_study",
    "permutation_study",
    "perturbation_study",
    "plot_perturbation",
]

#: The published directional sweep: ``latent + alpha * PUBLISHED_STEP`` for these ``alpha``.
PUBLISHED_ALPHAS = tuple(float(alpha) for alpha in np.linspace(-1.0, 1.0, 9))
PUBLISHED_STEP = 0.5


def encode_latents(model, data: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Quantized latents ``(G, h, w, D)`` float32 of normalised groups ``(G, 3, S, P)``."""
    import torch

    model = model.eval().to(device)
    with torch.inference_mode():
        latents = [
            model.encode(torch.from_numpy(np.ascontiguousarray(data[start:start + batch_size])).to(device)).quantized.float().cpu().numpy()
            for start in range(0, len(data), batch_size)
        ]
    return np.concatenate(latents) if latents else np.empty((0, *model.latent_shape), np.float32)


def decode_latents(model, latents: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Normalised groups ``(G, 3, S, P)`` decoded from latents ``(G, h, w, D)``."""
    import torch

    model = model.eval().to(device)
    with torch.inference_mode():
        groups = [
            model.decode(torch.from_numpy(np.ascontiguousarray(latents[start:start + batch_size], dtype=np.float32)).to(device)).float().cpu().numpy()
            for start in range(0, len(latents), batch_size)
        ]
    return np.concatenate(groups) if groups else np.empty((0, *model.input_shape), np.float32)


def gaussian_perturbation(latents: np.ndarray, eps: float, *, seed: int = 0) -> np.ndarray:
    """``latents + eps * N(0, 1)``, float32, from ``default_rng([seed, round(eps * 1e6)])``."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    rng = np.random.default_rng([int(seed), int(round(eps * 1e6))])
    return (latents + eps * rng.standard_normal(latents.shape)).astype(np.float32)


def directional_perturbation(latents: np.ndarray, alpha: float, *, step: float = PUBLISHED_STEP, direction: np.ndarray | None = None) -> np.ndarray:
    """``latents + alpha * step * direction`` (direction: all ones, the published sweep)."""
    direction = np.ones(latents.shape[1:], np.float32) if direction is None else np.asarray(direction, np.float32)
    return (latents + np.float32(alpha * step) * direction).astype(np.float32)


@dataclass
class PerturbationResult:
    """Scores of decoded perturbed latents.

    Attributes
    ----------
    records : list of dict
        One per perturbation: ``kind`` (``gaussian`` or ``directional``), ``size`` (eps or
        alpha), and ``<column>_mean`` / ``<column>_std`` over all groups for BUAN and MDF.
    reconstructions : dict of (str, float) to ndarray (G, 3, S, P)
        The decoded groups of each perturbation.
    settings : dict
    """

    records: list[dict]
    reconstructions: dict[tuple[str, float], np.ndarray] = field(repr=False)
    settings: dict = field(default_factory=dict)

    def format(self) -> str:
        """The records as aligned text."""
        columns = [key for key in self.records[0] if key not in ("kind", "size")] if self.records else []
        lines = [f"{'kind':<12}{'size':>8}" + "".join(f"{column:>14}" for column in columns)]
        for record in self.records:
            lines.append(f"{record['kind']:<12}{record['size']:>8.3f}" + "".join(f"{record[c]:>14.5f}" for c in columns))
        return "\n".join(lines)

    def save_csv(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the records as CSV, atomically."""
        import csv

        with atomic_output(path, force=force) as temporary:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(self.records[0]), lineterminator="\n")
                writer.writeheader()
                writer.writerows(self.records)
        return Path(path)


def _summary(kind: str, size: float, scores: GroupScores) -> dict:
    record = {"kind": kind, "size": float(size)}
    for column, values in scores.values.items():
        record[f"{column}_mean"] = float(np.mean(values))
        record[f"{column}_std"] = float(np.std(values))
    return record


def perturbation_study(
    groups: GroupedBundles,
    model,
    eps: Sequence[float],
    *,
    alphas: Sequence[float] | None = PUBLISHED_ALPHAS,
    step: float = PUBLISHED_STEP,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> PerturbationResult:
    """Decode perturbed latents of every group and score them against the originals.

    Parameters
    ----------
    groups : GroupedBundles
        Grouped with the model's preprocessing.
    model : BundleAutoencoder
    eps : sequence of float
        Sizes of the Gaussian noise (0 gives the plain reconstruction).
    alphas : sequence of float or None, optional
        The directional sweep (default: the published one); None skips it.
    step : float, optional
        Step of the directional sweep.
    protocol, seed, workers
        See :func:`tractvq.scoring.score_groups` (``seed`` also seeds the noise).
    batch_size, device, progress

    Returns
    -------
    PerturbationResult
    """
    latents = encode_latents(model, groups.data, batch_size=batch_size, device=device)  # (G, h, w, D)
    perturbed = [("gaussian", float(size), gaussian_perturbation(latents, float(size), seed=seed)) for size in eps]
    perturbed += [("directional", float(alpha), directional_perturbation(latents, float(alpha), step=step)) for alpha in (alphas or ())]
    records, reconstructions = [], {}
    for kind, size, values in perturbed:
        decoded = decode_latents(model, values, batch_size=batch_size, device=device)
        scores = score_groups(groups, decoded, metrics=DEFAULT_METRICS, protocol=protocol, seed=seed, workers=workers, progress=progress)
        records.append(_summary(kind, size, scores))
        reconstructions[(kind, size)] = decoded
    protocol = protocol or Protocol()
    settings = {"protocol": protocol.name, "threshold": protocol.threshold, "clust_thr": list(protocol.clust_thr),
                "seed": seed, "eps": [float(e) for e in eps], "alphas": [float(a) for a in (alphas or ())], "step": step}
    return PerturbationResult(records, reconstructions, settings)


def plot_perturbation(result: PerturbationResult, path: str | os.PathLike, *, force: bool = False) -> Path:
    """A figure of BUAN and mean MDF against the perturbation size (one panel per kind).

    Raises
    ------
    ImportError
        Without matplotlib (``pip install tractvq[viz]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("plotting needs matplotlib: pip install 'tractvq[viz]'") from error
    kinds = list(dict.fromkeys(record["kind"] for record in result.records))
    figure, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        records = sorted((r for r in result.records if r["kind"] == kind), key=lambda r: r["size"])
        sizes = [r["size"] for r in records]
        axis.errorbar(sizes, [r["buan_mean"] for r in records], [r["buan_std"] for r in records], color="C0", marker="o", capsize=3)
        axis.set_xlabel("eps (latent noise std)" if kind == "gaussian" else f"alpha (latent + alpha * {result.settings.get('step')})")
        axis.set_ylabel("BUAN", color="C0")
        axis.set_ylim(-0.02, 1.02)
        twin = axis.twinx()
        twin.errorbar(sizes, [r["mdf_mean_mean"] for r in records], [r["mdf_mean_std"] for r in records], color="C1", marker="s", capsize=3)
        twin.set_ylabel("mean MDF (mm)", color="C1")
        axis.set_title(f"{kind} perturbation")
    figure.tight_layout()
    with atomic_output(path, force=force) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return Path(path)


def permutation_study(
    groups: GroupedBundles,
    model,
    *,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[EvaluationTable, dict[str, dict[str, float]]]:
    """Scores with the streamlines of each group shuffled before encoding, next to the
    canonical order.

    The rows of each group are permuted (``default_rng([seed, g])``), encoded, decoded and
    put back in place, so both reconstructions are scored against the same originals.

    Returns
    -------
    table : EvaluationTable
        Columns ``ordered`` and ``permuted`` × BUAN and MDF.
    change : dict of str to dict
        Per bundle (and ``"all"``): ``permuted - ordered`` of each column's mean.
    """
    size = groups.data.shape[2]
    permutations = np.stack([np.random.default_rng([int(seed), g]).permutation(size) for g in range(len(groups))])  # (G, S)
    inverse = np.argsort(permutations, axis=1)
    shuffled = np.take_along_axis(groups.data, permutations[:, None, :, None], axis=2)
    ordered, _ = run_model(model, groups.data, batch_size=batch_size, device=device)
    permuted, _ = run_model(model, shuffled, batch_size=batch_size, device=device)
    permuted = np.take_along_axis(permuted, inverse[:, None, :, None], axis=2)
    scores = {
        name: score_groups(groups, reconstruction, metrics=DEFAULT_METRICS, protocol=protocol, seed=seed, workers=workers)
        for name, reconstruction in (("ordered", ordered), ("permuted", permuted))
    }
    table = summarize(scores, DEFAULT_METRICS, settings={"study": "permutation", "seed": seed})
    change = {
        row: {column: float(table.value(row, "permuted", column)[0] - table.value(row, "ordered", column)[0])
              for _, column in table.columns[: len(table.columns) // 2]}
        for row in table.rows
    }
    return table, change


def generalisation_study(
    cache,
    models: Sequence,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    protocol: Protocol | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> EvaluationTable:
    """Scores on a cache's validation groups, bundles the model never saw marked apart.

    Parameters
    ----------
    cache : TrainingCache
        Prepared with ``holdout_bundles`` (``tractvq prepare --holdout-bundle NAME``); those
        bundles' rows are named ``"<bundle> (held out)"``, and the table gains the rows
        ``seen bundles`` and ``held-out bundles`` (only when bundles are held out).
    models : sequence
        Names, files or objects (:func:`tractvq.encoding.resolve_model`).

    Returns
    -------
    EvaluationTable
    """
    from tractvq.encoding import resolve_model
    from tractvq.evaluate import model_label

    held_out = set(cache.manifest.get("split", {}).get("holdout_bundles", []))
    groups = cache.split("validation")
    scores: dict[str, GroupScores] = {}
    for name in models:
        model, source = resolve_model(name)
        reconstruction, indices = run_model(model, groups.data, batch_size=batch_size, device=device)
        result = score_groups(groups, reconstruction, metrics=metrics, protocol=protocol, seed=seed, workers=workers,
                              indices=indices, codebook_size=getattr(model.quantizer, "codebook_size", None))
        result.bundle_names = [f"{name} (held out)" if name in held_out else name for name in result.bundle_names]
        result.codes = {(f"{key} (held out)" if key in held_out else key): value for key, value in result.codes.items()}
        scores[model_label(source or name, list(scores))] = result
    table = summarize(scores, metrics, settings={"study": "generalisation", "holdout_bundles": sorted(held_out), "seed": seed})
    return _with_split_rows(table, scores) if held_out else table


def _with_split_rows(table: EvaluationTable, scores: dict[str, GroupScores]) -> EvaluationTable:
    """Add ``seen bundles`` / ``held-out bundles`` rows (mean ± std over their groups)."""
    extra_rows = ["seen bundles", "held-out bundles"]
    mean = np.full((2, len(table.columns)), np.nan)
    std, count = mean.copy(), np.zeros(mean.shape, np.int64)
    for c, (model, column) in enumerate(table.columns):
        result = scores[model]
        if column not in result.values:
            continue
        held = np.array([name.endswith(" (held out)") for name in result.bundle_names])
        for r, selected in enumerate((~held, held)):
            if selected.any():
                values = result.values[column][selected]
                mean[r, c], std[r, c], count[r, c] = values.mean(), values.std(), len(values)
    return EvaluationTable(table.rows + extra_rows, table.columns, np.vstack([table.mean, mean]),
                           np.vstack([table.std, std]), np.vstack([table.count, count]), table.settings)
