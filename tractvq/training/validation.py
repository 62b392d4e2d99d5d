"""Validation during training: the metrics of the whole validation split.

Validation runs in eval mode under :func:`torch.inference_mode` inside
:func:`torch.random.fork_rng`, seeded by the run's ``seed``, so it changes no training state
(and its metrics are reproducible even for stochastic bottlenecks such as VQ-Diff's).
"""

from __future__ import annotations

import numpy as np
import torch

from tractvq.data import GroupDataset
from tractvq.metrics import mean_mdf_mm
from tractvq.training.processes import forked_rng

__all__ = ["validate"]


@torch.inference_mode()
def validate(model, dataset: GroupDataset, batch_size: int, device: torch.device, seed: int) -> dict:
    """Loss, MSE, mean MDF (mm), perplexity and usage of the whole validation split.

    Parameters
    ----------
    model : BundleAutoencoder
        The model, on ``device``; left in the mode it was in.
    dataset : GroupDataset
        The validation split.
    batch_size : int
        Groups per forward.
    device : torch.device
        Where the model is.
    seed : int
        Seed of the bottleneck's noise (VQ-Diff's "sample").

    Returns
    -------
    dict
        ``val_<part>`` for each loss part, ``val_mse``, ``val_mdf_mm``, ``val_perplexity``
        and ``val_usage`` (None for a continuous bottleneck).
    """
    from tractvq.quantizers import codebook_stats

    was_training = model.training
    model.eval()
    groups = dataset.groups
    totals: dict[str, float] = {}
    squared_error = 0.0
    distances, indices = [], []
    with forked_rng(device):
        torch.manual_seed(seed)  # stochastic bottlenecks (VQ-Diff's "sample") validate reproducibly
        for start in range(0, len(dataset), batch_size):
            rows = np.arange(start, min(start + batch_size, len(dataset)))
            batch = dataset.batch(rows).to(device)  # (b, 3, S, P)
            output = model(batch)
            _, parts = model.loss(batch, output)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value * len(rows)
            reconstruction = output.reconstruction.float()
            squared_error += float(((reconstruction - batch) ** 2).sum())
            subset = groups.select(rows)
            reconstruction_mm = subset.denormalize(reconstruction.cpu().numpy())  # (b, S, P, 3)
            distances.append(mean_mdf_mm(subset.denormalize(), reconstruction_mm, subset.mask))
            if output.quantizer_output.indices is not None:
                indices.append(output.quantizer_output.indices.reshape(-1).cpu())
    model.train(was_training)
    metrics = {f"val_{key}": value / len(dataset) for key, value in totals.items()}
    metrics["val_mse"] = squared_error / (len(dataset) * dataset.data[0].numel())
    metrics["val_mdf_mm"] = float(np.nanmean(np.concatenate(distances)))
    codebook_size = getattr(model.quantizer, "codebook_size", None)
    if indices and codebook_size:
        stats = codebook_stats(torch.cat(indices), int(codebook_size))
        metrics["val_perplexity"], metrics["val_usage"] = float(stats["perplexity"]), float(stats["usage"])
    else:  # continuous bottleneck (or no codebook size): the batch statistics, if any
        metrics.setdefault("val_perplexity", None)
        metrics.setdefault("val_usage", None)
    return metrics
