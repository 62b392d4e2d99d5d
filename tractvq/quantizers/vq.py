"""VQ-VAE with the straight-through estimator.

van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017
(arXiv 1711.00937). Each latent ``z`` is replaced by its nearest code ``c`` (eq. 2 there); the
decoder's gradient is copied to ``z`` unchanged (straight-through, ``z_q = z + sg(c - z)``);
the codebook and the encoder are pulled together by eq. 3::

    loss = ||sg(z) - c||^2 + beta ||z - sg(c)||^2,   beta = 0.25

with each squared norm reduced as a mean over the batch and the D dimensions, as in the Sonnet
and PyTorch reference VQ-VAEs (and in the published VQ-Diff baseline).

The module also holds the two pieces the other codebook quantizers share:
:func:`init_codebook` and :func:`pass_through`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.quantizers._codebook import nearest_codes
from tractvq.quantizers.base import Quantizer, QuantizerOutput, codebook_stats, register

__all__ = ["CODEBOOK_INITS", "VectorQuantizer", "init_codebook", "pass_through"]

CODEBOOK_INITS = ("uniform", "normal")


def init_codebook(codebook_size: int, dim: int, init: str) -> Tensor:
    """A fresh codebook ``(K, D)`` drawn from torch's global RNG.

    Parameters
    ----------
    codebook_size : int
        Number of codes K.
    dim : int
        Size D of each code.
    init : {"uniform", "normal"}
        ``"uniform"``: U(-1/K, 1/K), the published VQ-VAE (Sonnet and its PyTorch port);
        ``"normal"``: N(0, 1), the published PyTorch VQ-VAE-EMA.

    Returns
    -------
    Tensor, shape (K, D)

    Raises
    ------
    ValueError
        If ``init`` is not one of :data:`CODEBOOK_INITS`.
    """
    if init == "uniform":
        return torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size)
    if init == "normal":
        return torch.randn(codebook_size, dim)
    raise ValueError(f"init must be one of {', '.join(CODEBOOK_INITS)}; got {init!r}")


def pass_through(codes: Tensor, surrogate: Tensor) -> Tensor:
    """Forward value ``codes``, backward the Jacobian of ``surrogate``.

    Returns ``sg(codes) + (surrogate - sg(surrogate))``: the value is exactly ``codes``
    (``surrogate - sg(surrogate)`` is exactly zero) and the gradient reaches whatever
    ``surrogate`` depends on. With ``surrogate = z`` this is the straight-through estimator
    ``z + sg(c - z)`` of van den Oord et al. (2017), written so that the value is bit-exact.
    """
    return codes.detach() + (surrogate - surrogate.detach())


@register
class VectorQuantizer(Quantizer):
    """Nearest-code quantizer trained with the codebook and commitment losses.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    commitment : float, optional
        beta of the commitment term; 0.25 in van den Oord et al. (2017), sec. 3.2.
    init : {"uniform", "normal"}, optional
        Codebook initialisation, see :func:`init_codebook`; ``"uniform"`` U(-1/K, 1/K) is the
        published VQ-VAE's.

    Notes
    -----
    The codebook is ``self.codebook`` (an :class:`torch.nn.Embedding`, state-dict key
    ``codebook.weight``). Training and evaluation behave the same.
    """

    name = "vq"
    description = "VQ-VAE: nearest code, straight-through gradient, codebook + commitment loss"
    reference = "van den Oord et al., Neural Discrete Representation Learning, NeurIPS 2017"

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        commitment: float = 0.25,  # beta, van den Oord et al. (2017) sec. 3.2
        init: str = "uniform",  # U(-1/K, 1/K), the published VQ-VAE
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if not commitment >= 0:
            raise ValueError(f"commitment must be >= 0, got {commitment!r}")
        self.commitment = float(commitment)
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.copy_(init_codebook(self.codebook_size, self.dim, init))

    def _surrogate(self, latents: Tensor, codes: Tensor) -> Tensor:
        """What the gradient of the output flows through: ``z`` itself (straight-through)."""
        return latents

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        indices = nearest_codes(latents.detach(), self.codebook.weight.detach())  # (N,)
        codes = self.codebook(indices)  # (N, D)
        codebook_loss = F.mse_loss(codes, latents.detach())  # ||sg(z) - c||^2
        commitment_loss = F.mse_loss(latents, codes.detach())  # ||z - sg(c)||^2
        loss = codebook_loss + self.commitment * commitment_loss
        quantized = pass_through(codes, self._surrogate(latents, codes))  # value c
        stats = codebook_stats(indices, self.codebook_size)
        return QuantizerOutput(quantized, indices, loss, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)
