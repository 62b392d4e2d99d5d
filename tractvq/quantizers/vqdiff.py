"""VQ-Diff: the soft Gumbel-weighted codebook quantizer.

"Differentiable VQ-VAE's for Robust White Matter Streamline Encodings" (arXiv 2311.06212),
published code github.com/drewrl3v/diff-vq-vae (``run_experiments/models.py``).

The codebook ``e`` (K x D) is drawn N(0, 2^2). Each latent ``z`` is replaced by a
Gumbel-softmax weighted mean of all codes::

    w = gumbel_softmax(-||z - e_i||^2, tau),   s = sum_i w_i e_i,   tau = 10

i.e. ``w = softmax((-||z - e||^2 + g) / tau)`` with ``g ~ Gumbel(0, 1)``; fully differentiable,
no auxiliary loss (the paper argues the KL term is constant, so the loss is the
reconstruction alone). The output is continuous: ``indices`` (the largest weight) only
summarise it.

Evaluation modes (``eval_mode``)
--------------------------------
- ``"sample"``: as published, the Gumbel noise is drawn at evaluation too (stochastic).
- ``"mean"``: ``softmax(-||z - e||^2 / tau)`` without noise (deterministic, still a mixture).
- ``"hard"``: the nearest code, a discrete index, ``indices_to_codes(indices)`` exactly.

Training always samples. ``indices`` are the argmax of the weights (the nearest code in
``"mean"`` and ``"hard"``); ``stats`` adds ``soft_perplexity``, the perplexity of the batch's
mean weights. :meth:`VQDiff.indices_to_codes` returns codebook rows (the ``"hard"`` decoding).

Loading the published model: its ``_vq_vae._embedding.weight`` (512, 64) is this module's
``codebook.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.quantizers import _relaxed
from tractvq.quantizers._codebook import distance_logits, nearest_codes
from tractvq.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    codebook_stats,
    probability_stats,
    register,
)

__all__ = ["VQDiff"]

EVAL_MODES = ("sample", "mean", "hard")


class _GumbelMixture(torch.autograd.Function):
    """Gumbel-softmax weights ``w`` of logits ``A B^T`` ``(N, K)`` and the mixture ``w @ codebook``,
    block by block (:mod:`tractvq.quantizers._relaxed`).

    Returns the mixture ``(N, D)``, the largest weight's code ``(N,)`` and the mean weights
    ``(K,)`` (a statistic, without gradient).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, codebook: Tensor, temperature: float, seed: int):
        count, size = len(a), len(b)
        draws = _relaxed.UniformSource(seed, a.device)
        weights = a.new_empty(count, size)  # w, (N, K)
        mixture = a.new_empty(count, codebook.shape[1])
        indices = torch.empty(count, dtype=torch.int64, device=a.device)
        for rows in _relaxed.row_blocks(count, size):
            _, indices[rows] = _relaxed.relaxed_sample_(draws.fill_(weights[rows]), a[rows] @ b.t(), temperature)
            torch.mm(weights[rows], codebook, out=mixture[rows])
        ctx.save_for_backward(a, b, codebook, weights)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(indices)
        return mixture, indices, weights.mean(dim=0)

    @staticmethod
    def backward(ctx, grad_mixture: Tensor, *_):
        a, b, codebook, weights = ctx.saved_tensors
        grad_a, grad_b, grad_codebook = torch.empty_like(a), torch.zeros_like(b), torch.zeros_like(codebook)
        for rows in _relaxed.row_blocks(*weights.shape):
            grad_codebook.addmm_(weights[rows].t(), grad_mixture[rows])
            grad_weights = grad_mixture[rows] @ codebook.t()
            grad_logits = _relaxed.softmax_backward_(grad_weights, weights[rows], ctx.temperature)
            grad_logits = _relaxed.flush_subnormal(grad_logits)
            torch.mm(grad_logits, b, out=grad_a[rows])
            grad_b.addmm_(grad_logits.t(), a[rows])
        return grad_a, grad_b, grad_codebook, None, None


@register
class VQDiff(Quantizer):
    """Gumbel-softmax weighted mean of Gaussian-initialised codes (VQ-Diff).

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    temperature : float, optional
        tau of the Gumbel-softmax (10, the published code).
    init_std : float, optional
        Standard deviation of the N(0, std^2) initial codes (2.0, the published code).
    eval_mode : {"sample", "mean", "hard"}, optional
        Output at evaluation (see the module docstring); ``"sample"`` as published.

    Notes
    -----
    The codebook is ``self.codebook`` (:class:`torch.nn.Embedding`).
    """

    name = "vqdiff"
    description = "VQ-Diff: Gumbel-softmax weighted mean of the codes (soft, continuous)"
    reference = (
        "Differentiable VQ-VAE's for Robust White Matter Streamline Encodings, arXiv 2311.06212"
    )

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        temperature: float = 10.0,  # tau, published models.py gumbel_softmax(tau=10)
        init_std: float = 2.0,  # published models.py: codebook N(0, 2.0^2)
        eval_mode: str = "sample",  # published: Gumbel noise at evaluation too
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {', '.join(EVAL_MODES)}; got {eval_mode!r}")
        self.temperature = float(temperature)
        self.eval_mode = eval_mode
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.normal_(0.0, init_std)

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        mode = "sample" if self.training else self.eval_mode
        if mode == "hard":
            indices = nearest_codes(latents.detach(), self.codebook.weight.detach())
            quantized = self.codebook(indices)  # exact rows
            mean_weights = F.one_hot(indices, self.codebook_size).to(quantized.dtype).mean(dim=0)
        elif mode == "sample":  # w = gumbel_softmax(-||z - e||^2, tau), s = w @ e
            factors = _relaxed.distance_factors(latents, self.codebook.weight, 1.0)
            quantized, indices, mean_weights = _GumbelMixture.apply(
                *factors, self.codebook.weight, self.temperature, _relaxed.noise_seed()
            )
        else:  # softmax(-||z - e||^2 / tau)
            weights = distance_logits(latents, self.codebook.weight, 1 / self.temperature).softmax(dim=1)
            indices = weights.argmax(dim=1)
            quantized = weights @ self.codebook.weight
            mean_weights = weights.mean(dim=0)
        stats = codebook_stats(indices, self.codebook_size)
        stats["soft_perplexity"] = probability_stats(mean_weights)["perplexity"]
        return QuantizerOutput(quantized, indices, latents.new_zeros(()), stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)
