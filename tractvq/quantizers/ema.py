"""VQ-VAE with a codebook learned by exponential moving averages (VQ-VAE-EMA).

van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017
(arXiv 1711.00937), appendix A.1: instead of the codebook loss, each code is the running mean of
the latents assigned to it. With ``n_i`` latents ``z_ij`` assigned to code i in a batch and decay
``gamma``::

    (N)  N_i <- gamma N_i + (1 - gamma) n_i
    (m)  m_i <- gamma m_i + (1 - gamma) sum_j z_ij
    (e)  e_i <- m_i / N~_i

where ``N~_i = (N_i + eps) / (sum_k N_k + K eps) * sum_k N_k`` is the Laplace-smoothed cluster
size of the Sonnet reference implementation (it keeps unused codes from dividing by zero).
The loss is the commitment term alone, ``beta ||z - sg(e)||^2`` (mean reduction), and the
gradient reaches the encoder straight through.

:class:`EMACodebook` holds the codebook and its moving averages; :mod:`.householder` reuses it.

Optional dead-code revival (the "random restarts" of Dhariwal et al., Jukebox, arXiv
2005.00341; vector-quantize-pytorch's ``threshold_ema_dead_code``): after each update, a code
whose EMA cluster size ``N_i`` is below ``dead_code_threshold`` is replaced by a random latent
of the current batch, and its averages are reset to ``N_i = threshold`` and
``m_i = threshold * z``.

Decisions
---------
- ``N_i`` starts at 1 and ``m_i`` at the initial code, so that ``e = m / N`` holds from the
  start (as vector-quantize-pytorch does). The stored buffers are the unsmoothed averages
  (N) and (m), as in Sonnet; the smoothing only enters the division (e).
- Updates happen in training mode only (``self.training``), whether or not autograd is on.

Known deviations of reference packages
--------------------------------------
The published PyTorch VQ-VAE-EMA (the VQ-Diff baseline, buffers ``_ema_w`` and
``_ema_cluster_size``) starts ``_ema_cluster_size`` at 0 and ``_ema_w`` from an independent
N(0, 1) draw, and stores the Laplace-smoothed sizes back into ``_ema_cluster_size``. With a
zero start, every code unused in the first batch is divided by about ``eps`` and thrown ~1e5
times its scale away, where it stays dead. We start consistently instead (above). Loading a
published checkpoint needs only a renaming: ``_embedding.weight`` -> ``codebook.weight``,
``_ema_w`` -> ``codebook.embedding_sum``, ``_ema_cluster_size`` -> ``codebook.cluster_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.quantizers._codebook import nearest_codes
from tractvq.quantizers.base import Quantizer, QuantizerOutput, codebook_stats, register
from tractvq.quantizers.vq import init_codebook, pass_through

__all__ = ["EMACodebook", "EMAVectorQuantizer"]


class EMACodebook(nn.Module):
    """A codebook ``weight`` ``(K, D)`` kept as the EMA of its assigned latents.

    Parameters
    ----------
    codebook_size : int
        Number of codes K.
    dim : int
        Size D of each code.
    decay : float
        gamma of (N) and (m), in [0, 1).
    eps : float
        Laplace smoothing of the cluster sizes, > 0.
    init : {"uniform", "normal"}
        Initial codes, see :func:`tractvq.quantizers.vq.init_codebook`.

    Attributes
    ----------
    weight : Tensor, shape (K, D)
        The codes e_i (buffer).
    cluster_size : Tensor, shape (K,)
        EMA cluster sizes N_i (buffer), starting at 1.
    embedding_sum : Tensor, shape (K, D)
        EMA sums m_i of the assigned latents (buffer), starting at ``weight``.
    """

    def __init__(self, codebook_size: int, dim: int, decay: float, eps: float, init: str):
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.decay = float(decay)
        self.eps = float(eps)
        weight = init_codebook(codebook_size, dim, init)
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embedding_sum", weight.clone())

    @torch.no_grad()
    def update(self, latents: Tensor, indices: Tensor) -> None:
        """One EMA step, (N), (m), (e), from latents ``(N, D)`` assigned to codes ``(N,)``."""
        size = self.cluster_size.numel()
        counts = torch.bincount(indices, minlength=size).to(latents.dtype)  # n_i, (K,)
        sums = latents.new_zeros(self.embedding_sum.shape).index_add_(0, indices, latents)
        self.cluster_size.lerp_(counts, 1 - self.decay)  # (N)
        self.embedding_sum.lerp_(sums, 1 - self.decay)  # (m)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + size * self.eps) * total
        self.weight.copy_(self.embedding_sum / smoothed[:, None])  # (e)

    @torch.no_grad()
    def revive(self, latents: Tensor, dead: Tensor, threshold: float) -> None:
        """Replace dead codes by distinct random latents of the batch (torch's RNG).

        At most N codes are revived per call; the others wait for the next batch.
        """
        chosen = torch.randperm(latents.shape[0], device=latents.device)
        dead_indices = dead.nonzero().squeeze(1)[: chosen.numel()]
        samples = latents[chosen[: dead_indices.numel()]]  # (dead, D)
        self.weight[dead_indices] = samples
        self.cluster_size[dead_indices] = threshold
        self.embedding_sum[dead_indices] = threshold * samples


@register
class EMAVectorQuantizer(Quantizer):
    """Nearest-code quantizer whose codebook follows the EMA of its assigned latents.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    commitment : float, optional
        beta of the commitment loss; 0.25 in van den Oord et al. (2017).
    decay : float, optional
        EMA decay gamma; 0.99 in van den Oord et al. (2017), appendix A.1.
    eps : float, optional
        Laplace smoothing of the cluster sizes; 1e-5 as in Sonnet and the published model.
    revive_dead_codes : bool, optional
        Reset dead codes to random latents of the batch after each training step (off, as
        published).
    dead_code_threshold : float, optional
        A code is dead when its EMA cluster size is below this (1: used less than once per
        batch on average). Also defines ``stats["dead_codes"]``.
    init : {"uniform", "normal"}, optional
        Codebook initialisation; N(0, 1) as the published PyTorch VQ-VAE-EMA.

    Notes
    -----
    ``stats["dead_codes"]`` is the number of codes below the threshold (after this step's
    update, before revival). The codebook is ``self.codebook`` (:class:`EMACodebook`).
    """

    name = "vq-ema"
    description = "VQ-VAE-EMA: nearest code, straight-through gradient, EMA codebook"
    reference = "van den Oord et al., Neural Discrete Representation Learning, NeurIPS 2017"

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        commitment: float = 0.25,  # beta, van den Oord et al. (2017)
        decay: float = 0.99,  # gamma, van den Oord et al. (2017) appendix A.1
        eps: float = 1e-5,  # Laplace smoothing, Sonnet VectorQuantizerEMA
        revive_dead_codes: bool = False,  # Jukebox's random restarts; off as published
        dead_code_threshold: float = 1.0,  # EMA uses per batch below which a code is dead
        init: str = "normal",  # the published PyTorch VQ-VAE-EMA
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if not commitment >= 0:
            raise ValueError(f"commitment must be >= 0, got {commitment!r}")
        if not dead_code_threshold >= 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold!r}")
        self.commitment = float(commitment)
        self.revive_dead_codes = bool(revive_dead_codes)
        self.dead_code_threshold = float(dead_code_threshold)
        self.codebook = EMACodebook(self.codebook_size, self.dim, decay, eps, init)

    def _surrogate(self, latents: Tensor, codes: Tensor) -> Tensor:
        """What the gradient of the output flows through: ``z`` itself (straight-through)."""
        return latents

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        indices = nearest_codes(latents.detach(), self.codebook.weight)  # (N,)
        codes = self.codebook.weight[indices]  # (N, D), a copy: safe from the update below
        loss = self.commitment * F.mse_loss(latents, codes)  # beta ||z - sg(e)||^2
        quantized = pass_through(codes, self._surrogate(latents, codes))  # value e
        if self.training:
            self.codebook.update(latents.detach(), indices)
        dead = self.codebook.cluster_size < self.dead_code_threshold  # (K,)
        if self.training and self.revive_dead_codes:
            self.codebook.revive(latents.detach(), dead, self.dead_code_threshold)
        stats = codebook_stats(indices, self.codebook_size)
        stats["dead_codes"] = dead.sum().float()
        return QuantizerOutput(quantized, indices, loss, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook.weight)
