"""Relaxed Gumbel-softmax samples over a codebook, computed block by block.

The soft quantizers (``gumbel``, ``gmvq``, ``vqdiff``) draw in training, for each of N
latents, a relaxed sample over the K codes::

    s = softmax((l + g) / tau),   g = -log(-log U),   U ~ U[0, 1)   (N, K)

of logits ``l`` that are a product of the latent with the codebook (minus scaled squared
distances, or a linear map). Written as whole-tensor expressions, a training step makes some
twenty passes over freshly allocated (N, K) arrays and spends most of its time on memory
traffic and underflowing exponentials. The quantizers' autograd functions (one per
quantizer, in its module) instead run their (N, K) arithmetic here, a block of latents at a
time (:data:`BLOCK_ENTRIES` numbers per array, which stay in the CPU's cache), forward and
backward; only ``s`` is kept between the two, and the logits are recomputed. The formulas are
those of the plain expressions, which the tests compare them with.

Details
-------
- Logits as one product ``l = A B^T`` of factors (:func:`distance_factors`,
  :func:`linear_factors`): autograd carries the gradients of A and B to the latents and the
  codebook (or projection).
- Subnormal floats are kept out of the arithmetic: the CPU computes with them some 20 to 100
  times slower (torch's exponential takes a slow path below -87, and products of tiny weights
  with gradients land there). Softmax arguments are floored at :func:`exp_floor` (-43.7 in
  float32, relative to the row's largest), so weights below 1e-19 of the largest weight are
  raised to that: no float32 sum or mixture of K codes notices it, and the Gumbel-max choice
  is exact. Gradient entries that still fall below the smallest normal float are set to 0
  before the products (:func:`flush_subnormal`).
- The uniform draws (:class:`UniformSource`) come from numpy's SFC64 bit generator seeded by
  one draw from torch's generator per sample, so ``torch.manual_seed`` still fixes them: each
  raw 32-bit word ``w`` gives ``U = (w mod 2^24) / 2^24``, the law of :func:`torch.rand`
  (24 random bits), in half of torch's time on the CPU. On other devices torch's generator of
  the device is used, seeded the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BLOCK_ENTRIES",
    "UniformSource",
    "distance_factors",
    "exp_floor",
    "flush_subnormal",
    "linear_factors",
    "log_softmax_rows",
    "noise_seed",
    "relaxed_sample_",
    "row_blocks",
    "softmax_backward_",
    "uniform",
]

#: Numbers per (rows, K) array of one block: 2 MiB of float32.
BLOCK_ENTRIES = 2**19
_UNIFORM_BITS = 24  # torch.rand's resolution for float32


def row_blocks(rows: int, columns: int) -> list[slice]:
    """Slices of ``rows`` into blocks of about :data:`BLOCK_ENTRIES` / ``columns`` rows."""
    size = max(1, BLOCK_ENTRIES // max(columns, 1))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def exp_floor(dtype: torch.dtype) -> float:
    """Smallest argument given to ``exp``: half the log of the smallest normal float of
    ``dtype`` (-43.7 in float32), so that a product of two such exponentials is normal."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


def flush_subnormal(values: Tensor) -> Tensor:
    """``values`` with entries of magnitude below the smallest normal float set to 0."""
    return F.hardshrink(values, torch.finfo(values.dtype).tiny)


def distance_factors(latents: Tensor, codebook: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Factors ``A`` ``(N, D + 2)`` and ``B`` ``(K, D + 2)`` with ``A B^T = -scale ||z - c||^2``.

    ``A = [z, |z|^2, 1]``, ``B = [2 scale c, -scale, -scale |c|^2]``: the expansion
    ``-scale (|z|^2 - 2 z.c + |c|^2)`` in one product; differentiable in ``z`` and ``c``.
    """
    latent_norms = latents.pow(2).sum(dim=1, keepdim=True)  # (N, 1)
    code_norms = codebook.pow(2).sum(dim=1, keepdim=True)  # (K, 1)
    a = torch.cat([latents, latent_norms, torch.ones_like(latent_norms)], dim=1)
    b = torch.cat([codebook * (2 * scale), torch.full_like(code_norms, -scale), code_norms * -scale], dim=1)
    return a, b


def linear_factors(latents: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Factors ``A = [z, 1]`` ``(N, D + 1)`` and ``B = [W, b]`` ``(K, D + 1)``: ``A B^T = z W^T + b``."""
    a = torch.cat([latents, latents.new_ones(len(latents), 1)], dim=1)
    return a, torch.cat([weight, bias[:, None]], dim=1)


def noise_seed() -> int:
    """One draw from torch's default generator: the seed of one relaxed sample's uniforms."""
    return int(torch.randint(0, 2**62, ()).item())


class UniformSource:
    """U[0, 1) draws with 24 random bits, block after block, from one seed.

    Consecutive calls of :meth:`fill_` continue one stream: filling blocks of a tensor
    gives the same numbers as filling it at once (see :func:`uniform`).

    Parameters
    ----------
    seed : int
        From :func:`noise_seed`.
    device : torch.device
        ``cpu``: numpy's SFC64 raw words; any other device: torch's generator of it.
    """

    def __init__(self, seed: int, device: torch.device):
        self._device = torch.device(device)
        if self._device.type == "cpu":
            self._bits = np.random.SFC64(seed)
            self._spare = np.empty(0, np.uint32)  # a word drawn for an odd-sized block
        else:
            self._generator = torch.Generator(self._device).manual_seed(seed)

    def fill_(self, out: Tensor) -> Tensor:
        """Fill the contiguous tensor ``out`` with the next draws; returns ``out``."""
        if self._device.type != "cpu":
            return out.uniform_(generator=self._generator)
        count = out.numel()
        words = self._bits.random_raw(-(-(count - len(self._spare)) // 2)).view(np.uint32)
        if len(self._spare):
            words = np.concatenate([self._spare, words])
        words, self._spare = words[:count], words[count:]
        draws = torch.from_numpy(words.view(np.int32))
        draws.bitwise_and_(2**_UNIFORM_BITS - 1)  # the low 24 bits, as torch.rand takes them
        torch.mul(draws, 2.0**-_UNIFORM_BITS, out=out.view(-1))
        return out


def uniform(shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu") -> Tensor:
    """The uniform draws of one relaxed sample of ``shape`` from ``seed`` (float32)."""
    return UniformSource(seed, device).fill_(torch.empty(shape, device=device))


def relaxed_sample_(draws: Tensor, logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``softmax((l + g) / tau)`` over the rows, in place of the uniform ``draws`` ``(B, K)``.

    ``g = -log(-log U)``; ``U = 0`` gives the smallest weight. Returns the sample (``draws``)
    and the Gumbel-max choice ``argmax(l + g)`` ``(B,)``.
    """
    torch.sub(logits, draws.log_().neg_().log_(), out=draws)  # l + g
    top, choice = draws.max(dim=1, keepdim=True)
    draws.sub_(top).mul_(1 / temperature).clamp_min_(exp_floor(draws.dtype)).exp_()
    return draws.div_(draws.sum(dim=1, keepdim=True)), choice[:, 0]


def softmax_backward_(grad: Tensor, sample: Tensor, temperature: float) -> Tensor:
    """Gradient of ``softmax(x / tau)`` to ``x`` given its value ``sample`` and ``grad``, in place
    of ``grad``: ``s (grad - <grad, s>) / tau``."""
    projection = torch.linalg.vecdot(grad, sample)[:, None]  # (B, 1)
    return grad.sub_(projection).mul_(sample).mul_(1 / temperature)


def log_softmax_rows(logits: Tensor, log_normaliser: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``q = softmax(l)``, ``log q`` and ``logsumexp(l)`` ``(B, 1)`` of logits ``(B, K)``.

    Give ``log_normaliser`` (the third output of an earlier call) to recompute ``q`` and
    ``log q`` without reducing the rows again.
    """
    floor = exp_floor(logits.dtype)
    if log_normaliser is not None:
        log_posterior = logits - log_normaliser
        return log_posterior.clamp_min(floor).exp_(), log_posterior, log_normaliser
    top = logits.amax(dim=1, keepdim=True)
    log_posterior = logits - top
    posterior = log_posterior.clamp_min(floor).exp_()
    log_total = posterior.sum(dim=1, keepdim=True).log_()
    posterior.div_(log_total.exp())
    return posterior, log_posterior.sub_(log_total), top.add_(log_total)
