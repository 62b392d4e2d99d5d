"""Finite scalar quantization (FSQ).

Mentzer, Minnen, Agustsson & Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple",
ICLR 2024 (arXiv 2309.15505). Each of d = len(levels) channels is bounded to L_i levels and
rounded with a straight-through gradient; the implicit codebook is the grid of the
prod(L_i) combinations, so there is no codebook to learn and no auxiliary loss. Following the
paper's reference code (appendix A.1), with eps = 1e-3::

    half_l = (L - 1) (1 - eps) / 2
    offset = 0.5 if L is even else 0
    bound(z) = tanh(z + atanh(offset / half_l)) * half_l - offset      (values in (-L/2, L/2))
    code = round_ste(bound(z)) / (L // 2)

and the index is the mixed-radix number of the level indices ``round(bound(z)) + L // 2``,
first channel least significant (``basis = (1, L_1, L_1 L_2, ...)``).

When D != len(levels), learned ``Linear(D, d)`` and ``Linear(d, D)`` (with bias) project in
and out, as vector-quantize-pytorch does; :meth:`FSQ.indices_to_codes` returns the projected
codes, i.e. what the decoder sees.

Decisions
---------
- ``codebook_size`` is prod(levels): the constructor takes no ``codebook_size``, so
  :func:`tractvq.quantizers.build` does not pass its ``codebook_size`` (it is ignored).
- Every level must be >= 3: with L = 2 the paper's ``atanh(offset / half_l)`` is
  ``atanh(0.5 / 0.4995)``, undefined. (The paper recommends L_i >= 5.)
- The paper's listing has ``tan`` where ``atanh`` is meant (the first author confirmed it in
  vector-quantize-pytorch issue #94); we use ``atanh``, so ``bound(0) = 0``.
- Training and evaluation behave the same.

Known deviations of reference packages
--------------------------------------
vector-quantize-pytorch's ``FSQ.bound`` uses ``half_l = (L - 1) (1 + eps) / 2`` instead of the
paper's ``(1 - eps)``. The two bounds differ by under 0.01, so codes agree except within
that distance of a rounding boundary; e.g. for L = 5 and ``z = atanh(0.75)`` the package
gives level 2 (code 1.0) and the paper level 1 (code 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tractvq.quantizers.base import Quantizer, QuantizerOutput, codebook_stats, register
from tractvq.quantizers.vq import pass_through

__all__ = ["FSQ"]

_EPS = 1e-3  # the paper's appendix A.1


@register
class FSQ(Quantizer):
    """Bound each channel, round it to its grid; the codebook is implicit.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    levels : sequence of int, optional
        Levels L_i per channel, each >= 3; (8, 5, 5, 5) is the paper's choice for a codebook
        of about 2^10 (Table 1), giving 1000 codes.

    Attributes
    ----------
    codebook_size : int
        prod(levels).
    """

    name = "fsq"
    description = "finite scalar quantization: bounded channels rounded to a fixed grid"
    reference = "Mentzer et al., Finite Scalar Quantization: VQ-VAE Made Simple, ICLR 2024"

    def __init__(
        self,
        dim: int,
        *,
        levels: Sequence[int] = (8, 5, 5, 5),  # Mentzer et al. (2024) Table 1, ~2^10 codes
    ):
        super().__init__(dim)
        levels = list(levels)
        if not levels or any(isinstance(n, bool) or int(n) != n or n < 3 for n in levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 3, got {levels!r}")
        self.levels = tuple(int(n) for n in levels)
        self.codebook_size = math.prod(self.levels)
        level_sizes = torch.tensor(self.levels, dtype=torch.float32)  # L, (d,)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1]), dim=0)  # (d,) int64
        self.register_buffer("level_sizes", level_sizes, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        width = len(self.levels)
        same = width == self.dim
        self.project_in = nn.Identity() if same else nn.Linear(self.dim, width)
        self.project_out = nn.Identity() if same else nn.Linear(width, self.dim)

    @property
    def _half_width(self) -> Tensor:
        return torch.div(self.level_sizes, 2, rounding_mode="floor")  # L // 2, (d,)

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        z = self.project_in(latents)  # (N, d)
        half_l = (self.level_sizes - 1) * (1 - _EPS) / 2
        offset = torch.where(self.level_sizes % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset  # (N, d)
        rounded = pass_through(bounded.round(), bounded)  # round, straight-through
        indices = ((rounded.detach() + self._half_width).long() * self.basis).sum(dim=1)  # (N,)
        quantized = self.project_out(rounded / self._half_width)  # (N, D)
        stats = codebook_stats(indices, self.codebook_size)
        return QuantizerOutput(quantized, indices, latents.new_zeros(()), stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        level_indices = (indices[..., None] // self.basis) % self.level_sizes.long()  # (..., d)
        return self.project_out((level_indices - self._half_width) / self._half_width)
