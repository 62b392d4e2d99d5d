"""Codebook arithmetic shared by the quantizers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "AnnealedTemperature",
    "distance_logits",
    "nearest_codes",
    "replace_unused_codes",
    "squared_distances",
]


def squared_distances(latents: Tensor, codebook: Tensor) -> Tensor:
    """Squared Euclidean distances ``(N, K)`` between latents ``(N, D)`` and codes ``(K, D)``.

    Computed as ``|z|^2 - 2 z.c + |c|^2`` with one matrix product (clamped at 0 against
    rounding), the form every reference implementation uses; the (N, K) result is the only
    matrix allocated (the same values as the three-term sum written out).
    """
    distances = torch.addmm(
        latents.pow(2).sum(dim=1, keepdim=True), latents, codebook.t(), alpha=-2
    )  # |z|^2 - 2 z.c, (N, K)
    return distances.add_(codebook.pow(2).sum(dim=1)).clamp_min_(0)


def nearest_codes(latents: Tensor, codebook: Tensor) -> Tensor:
    """Index ``(N,)`` of the nearest code of each latent (ties: the lowest index)."""
    return squared_distances(latents, codebook).argmin(dim=1)


class _DistanceLogits(torch.autograd.Function):
    """``-s ||z - c||^2`` ``(N, K)``; see :func:`distance_logits`."""

    @staticmethod
    def forward(ctx, latents: Tensor, codebook: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(latents, codebook)
        ctx.scale = scale
        norms = latents.pow(2).sum(dim=1, keepdim=True)  # |z|^2, (N, 1)
        logits = torch.addmm(norms, latents, codebook.t(), beta=-scale, alpha=2 * scale)  # (N, K)
        return logits.sub_(codebook.pow(2).sum(dim=1), alpha=scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        latents, codebook = ctx.saved_tensors
        # Subnormal entries (|g| < 2^-126, from the far tails of softmaxes) make the two
        # products ~5x slower on x86; set them to 0, as the CPU's flush-to-zero mode would.
        grad = grad.masked_fill(grad.abs() < torch.finfo(grad.dtype).tiny, 0)
        grad_latents = grad_codebook = None
        if ctx.needs_input_grad[0]:  # 2 s (g c - z sum_k g)
            grad_latents = (grad @ codebook).sub_(latents * grad.sum(dim=1, keepdim=True))
            grad_latents.mul_(2 * ctx.scale)
        if ctx.needs_input_grad[1]:  # 2 s (g^T z - c sum_n g)
            grad_codebook = (grad.t() @ latents).sub_(codebook * grad.sum(dim=0)[:, None])
            grad_codebook.mul_(2 * ctx.scale)
        return grad_latents, grad_codebook, None


def distance_logits(latents: Tensor, codebook: Tensor, scale: float = 1.0) -> Tensor:
    """Logits ``-scale * ||z - c||^2`` ``(N, K)`` of latents ``(N, D)`` against codes ``(K, D)``.

    :func:`squared_distances` for the softmax quantizers, in one matrix product and one pass,
    ``addmm(-s |z|^2, z, c^T, alpha=2 s) - s |c|^2``, with the gradient of that formula
    (entries of the incoming gradient below the smallest normal float count as 0). Not
    clamped: a logit of a code on top of its latent may round to a tiny positive value,
    which no softmax notices. With ``scale = 1`` the values are exactly those of
    ``-(|z|^2 - 2 z.c + |c|^2)``.
    """
    return _DistanceLogits.apply(latents, codebook, scale)


def replace_unused_codes(
    codebook: Tensor, usage: Tensor, batches: int, threshold: float, noise: float
) -> int:
    """Move rarely chosen codes onto perturbed copies of chosen ones, in place.

    The codebook replacement of the NSVQ and DiVeQ reference code: a code chosen in fewer
    than ``threshold * batches`` of the last ``batches`` training batches is unused; each
    unused code becomes a used code, drawn with probability proportional to its usage, plus
    Gaussian noise of standard deviation ``noise``. Nothing changes when no code, or every
    code, is unused.

    Parameters
    ----------
    codebook : Tensor, shape (K, D)
        The codes (a parameter is fine: the copy runs without autograd).
    usage : Tensor, shape (K,)
        Number of the ``batches`` batches in which each code was chosen at least once.
    batches : int
        Number of batches counted in ``usage`` (positive).
    threshold : float
        Fraction of the batches below which a code is unused.
    noise : float
        Standard deviation of the noise added to the copies.

    Returns
    -------
    int
        Number of codes replaced.
    """
    ratio = usage.float() / batches  # (K,)
    unused = torch.nonzero(ratio < threshold).flatten()
    used = torch.nonzero(ratio >= threshold).flatten()
    if unused.numel() == 0 or used.numel() == 0:
        return 0
    probabilities = usage[used] / usage[used].sum()
    sources = used[probabilities.multinomial(unused.numel(), replacement=True)]
    with torch.no_grad():
        copies = codebook[sources]
        codebook[unused] = copies + noise * torch.randn_like(copies)
    return int(unused.numel())


class AnnealedTemperature:
    """Mixin for Gumbel-softmax quantizers: an exponentially annealed temperature.

    ``temperature`` is ``max(min_temperature, start * exp(-anneal_rate * step))``, the
    schedule of Jang et al. (2017, experiments: ``tau = max(0.5, exp(-r t))``). The training
    loop calls :meth:`set_step` with its global step; the step is a buffer, so a checkpoint
    restores the temperature with the weights. Without calls to :meth:`set_step` the
    temperature stays at its start value.
    """

    def _init_temperature(self, start: float, minimum: float, anneal_rate: float) -> None:
        if not start > 0:
            raise ValueError(f"temperature must be positive, got {start!r}")
        if not 0 < minimum <= start:
            raise ValueError(
                f"min_temperature must be in (0, temperature={start!r}], got {minimum!r}"
            )
        if not anneal_rate >= 0:
            raise ValueError(f"anneal_rate must be >= 0, got {anneal_rate!r}")
        self.start_temperature = float(start)
        self.min_temperature = float(minimum)
        self.anneal_rate = float(anneal_rate)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def set_step(self, step: int) -> None:
        """Set the training step that the temperature follows.

        Raises
        ------
        ValueError
            If ``step`` is not a non-negative integer.
        """
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        self.step.fill_(int(step))

    @property
    def temperature(self) -> float:
        """The Gumbel-softmax temperature τ at the current step."""
        decayed = self.start_temperature * math.exp(-self.anneal_rate * int(self.step))
        return max(self.min_temperature, decayed)
