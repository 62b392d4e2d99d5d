"""NSVQ: vector quantization by noise substitution.

Vali & Bäckström, "NSVQ: Noise Substitution in Vector Quantization for Machine Learning",
IEEE Access 10 (2022), https://ieeexplore.ieee.org/document/9696322; reference code
github.com/MHVali/Noise-Substitution-in-Vector-Quantization (``NSVQ.py``, ``train.py``).

In training, the quantization error ``c - z`` (``c`` the nearest code) is replaced by a random
vector of the same length::

    z_q = z + (||z - c|| / ||v||) v,    v ~ N(0, I)

so ``z_q`` lies at the true quantization distance from ``z``, in a random direction, and the
gradient reaches ``z`` (identity plus the norm's Jacobian) and the chosen code (through
``||z - c||``). There is no auxiliary loss. At evaluation ``z_q = c``, the nearest code.

Codes that go unused are replaced as in the reference code: training counts, per code, the
batches in which it was chosen; every ``replacement_interval`` batches (1000 in the reference
``train.py``) a code chosen in less than ``discard_threshold`` of them is moved onto a used
code plus a little noise (:func:`tractvq.quantizers._codebook.replace_unused_codes`).

:class:`NSVQ` also holds what :mod:`.diveq` and :mod:`.sf_diveq` share with it: the codebook,
the usage counters and the replacement.

Decisions
---------
- The replacement runs at the start of the training forward that follows the interval's last
  batch, before the codebook is used, so it never changes a codebook that a pending backward
  pass still needs. A trainer may also call :meth:`NSVQ.replace_unused_codes` itself (e.g. to
  stop replacing near the end of training, as the reference advises, set
  ``replacement_interval = None`` and call it when wanted).
- Usage counts batches, not vectors, as the reference does (``codebooks_used[indices] += 1``
  adds one per batch however often a code is chosen in it).
- ``replacement_noise`` defaults to the reference's 1e-12, which is below float32 resolution
  for codes of unit scale: a replaced code is then an exact copy, and since ties go to the
  lower index, one of the two takes all their latents. Raise it to split copies apart.

Known deviations of reference packages
--------------------------------------
- The reference replaces an unused code by the used codes in index order (or a random
  permutation of repeated used codes when there are more unused than used codes); we draw the
  sources with probability proportional to usage, as the DiVeQ package does, so that heavily
  used codes are split first.
- The reference computes ``(||z - c|| / ||v|| + 1e-12) v``; we leave out the ``1e-12`` (it
  only adds a negligible ``1e-12 v``).
- The reference, when no code is used enough, adds 1e-12 noise to every code; we leave the
  codebook unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tractvq.quantizers import _codebook
from tractvq.quantizers._codebook import nearest_codes
from tractvq.quantizers.base import Quantizer, QuantizerOutput, codebook_stats, register
from tractvq.quantizers.vq import init_codebook

__all__ = ["NSVQ"]


@register
class NSVQ(Quantizer):
    """Nearest-code quantizer trained by substituting the quantization error with noise.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    replacement_interval : int or None, optional
        Replace unused codes after every this many training batches (1000 in the reference
        ``train.py``); None: only when :meth:`replace_unused_codes` is called.
    discard_threshold : float, optional
        A code chosen in less than this fraction of the counted batches is unused (0.01 in
        the reference code).
    replacement_noise : float, optional
        Standard deviation of the noise added to a replaced code (1e-12 in the reference).

    Notes
    -----
    The codebook is ``self.codebook`` (:class:`torch.nn.Embedding`, initialised N(0, 1) as in
    the reference). The buffers ``code_usage`` (K,) and ``usage_batches`` count, since the last
    replacement, the training batches in which each code was chosen and the batches seen.
    ``stats["dead_codes"]`` is the number of codes not chosen in any of them.
    """

    name = "nsvq"
    description = "NSVQ: nearest code, quantization error replaced by scaled Gaussian noise"
    reference = (
        "Vali & Bäckström, NSVQ: Noise Substitution in Vector Quantization for Machine Learning,"
        " IEEE Access 2022"
    )

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        replacement_interval: int | None = 1000,  # reference train.py, replacement_num_batches
        discard_threshold: float = 0.01,  # reference NSVQ.py, discarding_threshold
        replacement_noise: float = 1e-12,  # reference NSVQ.py, self.eps
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if replacement_interval is not None and (
            isinstance(replacement_interval, bool)
            or int(replacement_interval) != replacement_interval
            or replacement_interval < 1
        ):
            raise ValueError(
                "replacement_interval must be a positive integer or None,"
                f" got {replacement_interval!r}"
            )
        if not 0 <= discard_threshold <= 1:
            raise ValueError(f"discard_threshold must be in [0, 1], got {discard_threshold!r}")
        if not replacement_noise >= 0:
            raise ValueError(f"replacement_noise must be >= 0, got {replacement_noise!r}")
        self.replacement_interval = replacement_interval
        self.discard_threshold = float(discard_threshold)
        self.replacement_noise = float(replacement_noise)
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.copy_(self._initial_codebook())
        self.register_buffer("code_usage", torch.zeros(self.codebook_size, dtype=torch.int64))
        self.register_buffer("usage_batches", torch.zeros((), dtype=torch.int64))

    def _initial_codebook(self) -> Tensor:
        """The initial codes ``(K, D)``: N(0, 1), the reference's ``initialization='normal'``."""
        return init_codebook(self.codebook_size, self.dim, "normal")

    def _substitute(self, latents: Tensor, codes: Tensor) -> Tensor:
        """``z + (||z - c|| / ||v||) v`` with ``v ~ N(0, I)``: the training output."""
        noise = torch.randn_like(latents)  # v, (N, D)
        scale = torch.linalg.vector_norm(latents - codes, dim=1, keepdim=True) / (
            torch.linalg.vector_norm(noise, dim=1, keepdim=True)
        )
        return latents + scale * noise

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        if self.training:
            self._replace_if_due()
        indices = nearest_codes(latents.detach(), self.codebook.weight.detach())  # (N,)
        codes = self.codebook(indices)  # c, (N, D)
        if self.training:
            quantized = self._substitute(latents, codes)
            self._count_usage(indices)
        else:
            quantized = codes
        return QuantizerOutput(
            quantized, indices, latents.new_zeros(()), self._stats(indices, self.codebook_size)
        )

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)

    def replace_unused_codes(self) -> int:
        """Replace the codes used in too few of the batches counted so far; reset the counts.

        Returns
        -------
        int
            Number of codes replaced (0 when no batch was counted yet).
        """
        batches = int(self.usage_batches)
        if batches == 0:
            return 0
        replaced = _codebook.replace_unused_codes(
            self.codebook.weight,
            self.code_usage,
            batches,
            self.discard_threshold,
            self.replacement_noise,
        )
        self.code_usage.zero_()
        self.usage_batches.zero_()
        return replaced

    def _replace_if_due(self) -> None:
        if self.replacement_interval and int(self.usage_batches) >= self.replacement_interval:
            self.replace_unused_codes()

    @torch.no_grad()
    def _count_usage(self, used: Tensor) -> None:
        """Count one batch in which the codes ``used`` (indices, repeats allowed) were chosen."""
        self.code_usage += torch.bincount(used, minlength=self.codebook_size).clamp_max(1)
        self.usage_batches += 1

    def _stats(self, indices: Tensor, size: int) -> dict[str, Tensor]:
        stats = codebook_stats(indices, size)
        stats["dead_codes"] = (self.code_usage == 0).sum().float()
        return stats
