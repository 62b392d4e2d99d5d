"""Codebook arithmetic shared by the quantizers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["squared_distances", "nearest_codes"]


def squared_distances(latents: Tensor, codebook: Tensor) -> Tensor:
    """Squared Euclidean distances ``(N, K)`` between latents ``(N, D)`` and codes ``(K, D)``.

    Computed as ``|z|^2 - 2 z.c + |c|^2`` with one matrix product (clamped at 0 against
    rounding), the form every reference implementation uses.
    """
    return (
        latents.pow(2).sum(dim=1, keepdim=True)
        - 2 * latents @ codebook.t()
        + codebook.pow(2).sum(dim=1)[None, :]
    ).clamp_min(0)


def nearest_codes(latents: Tensor, codebook: Tensor) -> Tensor:
    """Index ``(N,)`` of the nearest code of each latent (ties: the lowest index)."""
    return squared_distances(latents, codebook).argmin(dim=1)
