"""DiVeQ: differentiable vector quantization by the reparameterization trick.

Vali, Bäckström & Solin, "DiVeQ: Differentiable Vector Quantization Using the
Reparameterization Trick", ICLR 2026 (arXiv 2509.26469); reference package ``diveq``
(github.com/AaltoML/DiVeQ_package, class ``DIVEQ``).

In training the output is the input plus a simulated quantization error whose length is the
true one and whose direction points, up to a little noise, at the nearest code ``c``::

    z_q = z + ||c - z|| sg[(c - z + v) / ||c - z + v||],    v ~ N(0, sigma^2 I)

with ``sg`` the stop-gradient and ``sigma^2 = 1e-3`` (``noise_variance``, a variance). The
forward value lies at the true distance from ``z``, close to ``c``; the gradient reaches ``z``
and reaches the chosen code only through the length ``||c - z||``. There is no auxiliary
loss. At evaluation ``z_q = c``, the nearest code. ``noise_variance = 0`` gives the
deterministic direction ``(c - z) / ||c - z||`` (the package's ``DIVEQDetach``).

Unused codes are replaced as in NSVQ (see :mod:`.nsvq`), with the package's defaults: every
100 training batches, codes chosen in less than 1% of them become a used code plus
N(0, 1e-9^2) noise. The codebook starts U(0, 1/K), as in the package.

Known deviations of reference packages
--------------------------------------
- ``diveq.DIVEQ`` draws its noise as ``Normal(0, noise_var)``, whose second argument is a
  standard deviation: its documented "variance" ``noise_var = 1e-3`` is a variance of 1e-6.
  We follow the paper: ``noise_variance`` is sigma^2. ``DIVEQ(noise_var=s)`` equals our
  ``noise_variance=s**2`` (tested).
- ``DIVEQ`` replaces codes inside ``forward`` at the end of every ``replacement_iters``-th call,
  writing ``codebook.data`` after the output was computed (before the optimizer step), and
  whether the module is in training mode or not; evaluation needs its separate ``inference``
  method. We replace at the start of the next training forward, after the optimizer step (the
  same RNG order: without a step in between the result is identical, tested), and evaluate in
  ``eval()``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tractvq.quantizers.base import register
from tractvq.quantizers.nsvq import NSVQ

__all__ = ["DiVeQ"]


@register
class DiVeQ(NSVQ):
    """Nearest-code quantizer trained by a directional reparameterization of the error.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    noise_variance : float, optional
        sigma^2, the variance of the directional noise ``v`` (1e-3 in the paper).
    replacement_interval : int or None, optional
        Replace unused codes after every this many training batches (100 in ``diveq``);
        None: only when :meth:`replace_unused_codes` is called.
    discard_threshold : float, optional
        A code chosen in less than this fraction of the counted batches is unused (0.01 in
        ``diveq``).
    replacement_noise : float, optional
        Standard deviation of the noise added to a replaced code (1e-9, ``diveq``'s
        ``perturb_eps``).

    Notes
    -----
    Codebook, usage buffers and ``stats["dead_codes"]`` as in :class:`~.nsvq.NSVQ`; the codes
    start U(0, 1/K) as in ``diveq``.
    """

    name = "diveq"
    description = "DiVeQ: nearest code, error of true length along a noisy stop-gradient direction"
    reference = "Vali, Bäckström & Solin, DiVeQ, ICLR 2026 (arXiv 2509.26469)"

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        noise_variance: float = 1e-3,  # sigma^2, DiVeQ paper and diveq's documented default
        replacement_interval: int | None = 100,  # diveq DIVEQ replacement_iters
        discard_threshold: float = 0.01,  # diveq DIVEQ discard_threshold
        replacement_noise: float = 1e-9,  # diveq DIVEQ perturb_eps
    ):
        if not noise_variance >= 0:
            raise ValueError(f"noise_variance must be >= 0, got {noise_variance!r}")
        super().__init__(
            dim,
            codebook_size,
            replacement_interval=replacement_interval,
            discard_threshold=discard_threshold,
            replacement_noise=replacement_noise,
        )
        self.noise_variance = float(noise_variance)

    def _initial_codebook(self) -> Tensor:
        """The initial codes ``(K, D)``: U(0, 1/K), ``diveq``'s ``uniform_init``."""
        return torch.rand(self.codebook_size, self.dim) / self.codebook_size

    def _error(self, latents: Tensor, codes: Tensor) -> Tensor:
        """``||c - z|| sg[(c - z + v) / ||c - z + v||]``, ``v ~ N(0, sigma^2 I)``, ``(N, D)``."""
        offset = codes - latents  # c - z
        with torch.no_grad():  # sg[...]
            noise = torch.randn_like(offset).mul_(self.noise_variance**0.5)  # v
            noisy = noise.add_(offset)  # c - z + v
            norm = torch.linalg.vector_norm(noisy, dim=1, keepdim=True).clamp_min_(1e-12)
            direction = noisy.div_(norm)
        return torch.linalg.vector_norm(offset, dim=1, keepdim=True) * direction

    def _substitute(self, latents: Tensor, codes: Tensor) -> Tensor:
        return latents + self._error(latents, codes)
