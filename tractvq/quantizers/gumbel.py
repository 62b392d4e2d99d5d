"""Straight-through Gumbel-softmax quantization.

Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017
(arXiv 1611.01144); the codebook form of taming-transformers' ``GumbelQuantize`` (Esser,
Rombach & Ommer, CVPR 2021).

Each latent ``z`` gets logits ``l`` over the K codes: the negative squared distances
``l_k = -||z - c_k||^2`` (``logits="distance"``) or a learned linear map ``l = W z + b``
(``logits="linear"``, taming's projection). In training a one-hot ``y`` is drawn with the
Gumbel-max trick and the output is ``y @ codebook``, the chosen code; the gradient is that of
the relaxed sample (straight-through, Jang et al. sec. 2.2)::

    y = onehot(argmax(l + g)) - sg[s] + s,   s = softmax((l + g) / tau),   g ~ Gumbel(0, 1)

The loss is ``kl_weight`` times the KL of the posterior ``q = softmax(l)`` to the uniform prior,
``sum_k q_k log(K q_k)``, averaged over the latents (the VAE term of Jang et al.; taming's
weight 5e-4). At evaluation the code is ``argmax l``, without noise.

Temperature
-----------
``tau(step) = max(min_temperature, temperature * exp(-anneal_rate * step))`` (Jang et al.'s
schedule, their ``tau = max(0.5, exp(-r t))`` with r in {1e-5, 1e-4}). The training loop calls
``quantizer.set_step(step)``; ``quantizer.temperature`` is the current value, also in
``stats["temperature"]``. The step is a buffer, saved with the weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tractvq.quantizers import _relaxed
from tractvq.quantizers._codebook import AnnealedTemperature, distance_logits
from tractvq.quantizers.base import Quantizer, QuantizerOutput, codebook_stats, register
from tractvq.quantizers.vq import init_codebook

__all__ = ["GumbelSoftmax"]

LOGITS = ("distance", "linear")


class _UniformPriorKL(torch.autograd.Function):
    """``mean_n sum_k q_nk log(K q_nk)``, ``q = softmax(logits)`` ``(N, K)``: the KL of the
    posterior to the uniform prior, averaged over the latents.

    The same value and gradient as written with :func:`torch.log_softmax`, in fewer passes
    over the ``(N, K)`` logits: one softmax, and ``log q = l - logsumexp(l)`` read off the
    softmax at its largest entry. The gradient is ``q (log q - sum_k q_k log q_k) / N``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor) -> Tensor:
        posterior = logits.softmax(dim=1)  # q, (N, K)
        top, code = posterior.max(dim=1)  # max q = exp(max l - logsumexp l)
        log_normaliser = logits.gather(1, code[:, None]) - top.log()[:, None]  # logsumexp l
        log_posterior = logits - log_normaliser  # log q, (N, K)
        negative_entropy = torch.linalg.vecdot(posterior, log_posterior)  # (N,)
        ctx.save_for_backward(posterior, log_posterior, negative_entropy)
        return negative_entropy.mean() + math.log(logits.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        posterior, log_posterior, negative_entropy = ctx.saved_tensors
        scale = grad / posterior.shape[0]
        return (log_posterior - negative_entropy[:, None]).mul_(posterior).mul_(scale)


class _GumbelChoice(torch.autograd.Function):
    """A training step's Gumbel-max codes of logits ``A B^T`` ``(N, K)``, block by block
    (:mod:`tractvq.quantizers._relaxed`).

    Returns the chosen rows ``codebook[c]`` with the straight-through gradient of ``y @ codebook``
    (``y = onehot(c) - sg(s) + s``), the posterior KL ``mean_n sum_k q_nk log(K q_nk)`` of
    ``q = softmax(l)`` (as :class:`_UniformPriorKL`) and the codes ``c``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, codebook: Tensor, temperature: float, seed: int):
        count, size = len(a), len(b)
        draws = _relaxed.UniformSource(seed, a.device)
        sample = a.new_empty(count, size)  # s, (N, K)
        indices = torch.empty(count, dtype=torch.int64, device=a.device)
        negative_entropy = a.new_empty(count, 1)  # sum_k q log q, (N, 1)
        log_normaliser = a.new_empty(count, 1)  # logsumexp(l), (N, 1)
        for rows in _relaxed.row_blocks(count, size):
            logits = a[rows] @ b.t()
            _, indices[rows] = _relaxed.relaxed_sample_(draws.fill_(sample[rows]), logits, temperature)
            posterior, log_posterior, log_normaliser[rows] = _relaxed.log_softmax_rows(logits)
            negative_entropy[rows, 0] = torch.linalg.vecdot(posterior, log_posterior)
        ctx.save_for_backward(a, b, codebook, sample, indices, negative_entropy, log_normaliser)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(indices)
        kl = negative_entropy.mean() + math.log(size)
        return codebook[indices], kl, indices

    @staticmethod
    def backward(ctx, grad_rows: Tensor, grad_kl: Tensor, _):
        a, b, codebook, sample, indices, negative_entropy, log_normaliser = ctx.saved_tensors
        grad_a, grad_b = torch.empty_like(a), torch.zeros_like(b)
        kl_scale = grad_kl / len(a)
        for rows in _relaxed.row_blocks(*sample.shape):
            grad_logits = _relaxed.softmax_backward_(grad_rows[rows] @ codebook.t(), sample[rows], ctx.temperature)
            posterior, log_posterior, _ = _relaxed.log_softmax_rows(a[rows] @ b.t(), log_normaliser[rows])
            grad_kl_logits = log_posterior.sub_(negative_entropy[rows]).mul_(posterior).mul_(kl_scale)
            grad_logits = _relaxed.flush_subnormal(grad_logits.add_(grad_kl_logits))
            torch.mm(grad_logits, b, out=grad_a[rows])
            grad_b.addmm_(grad_logits.t(), a[rows])
        grad_codebook = torch.zeros_like(codebook).index_add_(0, indices, grad_rows)  # y^T grad
        return grad_a, grad_b, grad_codebook, None, None


@register
class GumbelSoftmax(AnnealedTemperature, Quantizer):
    """Hard one-hot code choice by the Gumbel-max trick, soft Gumbel-softmax gradient.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    logits : {"distance", "linear"}, optional
        Logits from the negative squared distances to the codes, or from a learned
        ``Linear(D, K)``.
    kl_weight : float, optional
        Weight of the KL of ``softmax(logits)`` to the uniform prior (5e-4, taming's).
    temperature : float, optional
        Starting temperature tau_0 (1.0, Jang et al.).
    min_temperature : float, optional
        Floor of the annealed temperature (0.5, Jang et al.).
    anneal_rate : float, optional
        r of ``tau_0 exp(-r step)`` (1e-4, Jang et al.'s faster rate); 0 keeps tau fixed.

    Notes
    -----
    The codebook is ``self.codebook`` (:class:`torch.nn.Embedding`, N(0, 1) as taming's); the
    linear logits are ``self.project``.
    """

    name = "gumbel"
    description = "straight-through Gumbel-softmax: hard one-hot forward, relaxed gradient, KL"
    reference = "Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017"

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        logits: str = "distance",  # issue: -||z - c||^2, or taming's learned projection
        kl_weight: float = 5e-4,  # taming-transformers GumbelQuantize kl_weight
        temperature: float = 1.0,  # tau_0, Jang et al. (2017) experiments
        min_temperature: float = 0.5,  # Jang et al. (2017): tau = max(0.5, exp(-r t))
        anneal_rate: float = 1e-4,  # r, Jang et al. (2017): r in {1e-5, 1e-4}
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if logits not in LOGITS:
            raise ValueError(f"logits must be one of {', '.join(LOGITS)}; got {logits!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self._init_temperature(temperature, min_temperature, anneal_rate)
        self.logits = logits
        self.kl_weight = float(kl_weight)
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.copy_(init_codebook(self.codebook_size, self.dim, "normal"))
        if logits == "linear":
            self.project = nn.Linear(self.dim, self.codebook_size)

    def _logit_factors(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``A``, ``B`` with logits ``A B^T`` (see :mod:`tractvq.quantizers._relaxed`)."""
        if self.logits == "linear":
            return _relaxed.linear_factors(latents, self.project.weight, self.project.bias)
        return _relaxed.distance_factors(latents, self.codebook.weight, 1.0)

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        if self.training:  # y = onehot(argmax(l + g)) - sg[s] + s
            quantized, kl, indices = _GumbelChoice.apply(
                *self._logit_factors(latents), self.codebook.weight, self.temperature, _relaxed.noise_seed()
            )
        else:
            logits = self.project(latents) if self.logits == "linear" else distance_logits(latents, self.codebook.weight)
            indices = logits.argmax(dim=1)
            quantized = self.codebook(indices)
            kl = _UniformPriorKL.apply(logits)
        stats = codebook_stats(indices, self.codebook_size)
        stats["temperature"] = latents.new_tensor(self.temperature)
        return QuantizerOutput(quantized, indices, self.kl_weight * kl, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)
