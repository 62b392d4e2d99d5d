"""VQ-VAE with the rotation trick.

Fifty, Junkins, Duan, Iger, Liu, Amid, Thrun & Ré, "Restructuring Vector Quantization with the
Rotation Trick", arXiv 2410.06424 (ICLR 2025). The forward value is the nearest code ``c``, as
in the VQ-VAE; the gradient reaches the encoder output ``z`` through the rotation-and-rescaling
``(||c|| / ||z||) R`` that takes ``z`` to ``c``, treated as a constant (sec. 4). With
``e = z / ||z||``, ``q = c / ||c||`` and ``r = (e + q) / ||e + q||``,
``R = I - 2 r r^T + 2 q e^T`` (sec. 4.2, the efficient Householder form, no D x D matrix)::

    z~ = sg(||c|| / ||z||) (z - 2 sg(r) (sg(r)^T z) + 2 sg(q) (sg(e)^T z))

so ``dz~/dz = (||c|| / ||z||) R`` and the encoder receives ``(||c|| / ||z||) R^T g`` for an
upstream gradient ``g``. The codebook is learned as in the VQ-VAE (codebook loss + beta 0.25
commitment; the paper keeps each base model's codebook update).

Decisions
---------
- Norms are clamped at 1e-6 (as vector-quantize-pytorch's ``rotate_to``); at ``z = 0`` or
  ``e = -q`` the gradient map degenerates but stays finite.
- The output's value is exactly ``c`` (:func:`tractvq.quantizers.vq.pass_through`), not the
  rounding-perturbed ``z~``; the gradient is that of ``z~``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tractvq.quantizers._geometry import NORM_EPS, directions, reflect
from tractvq.quantizers.base import register
from tractvq.quantizers.vq import VectorQuantizer

__all__ = ["RotationVQ", "rotate_to"]


def rotate_to(latents: Tensor, codes: Tensor) -> Tensor:
    """The rotation trick's ``z~`` of latents ``(N, D)`` towards their codes ``(N, D)``.

    Parameters
    ----------
    latents : Tensor, shape (N, D)
        Encoder outputs z (the gradient flows to them).
    codes : Tensor, shape (N, D)
        Their codes c (treated as constants).

    Returns
    -------
    Tensor, shape (N, D)
        ``sg(||c||/||z||) sg(R) z``, numerically ``c``; its Jacobian is ``(||c||/||z||) R``.
    """
    e, q, scale = directions(latents, codes)  # (N, D), (N, D), (N, 1)
    r = F.normalize(e + q, dim=1, eps=NORM_EPS)  # (N, D)
    reflected = reflect(r, latents)  # z - 2 r (r^T z), (N, D)
    e_z = (e * latents).sum(dim=1, keepdim=True)  # e^T z, (N, 1)
    return scale * (reflected + 2 * q * e_z)


@register
class RotationVQ(VectorQuantizer):
    """VQ-VAE whose gradient passes through the rotation that takes ``z`` to its code.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    commitment : float, optional
        beta of the commitment loss; 0.25 as the VQ-VAE (Fifty et al. keep the base model's).
    init : {"uniform", "normal"}, optional
        Codebook initialisation, see :func:`tractvq.quantizers.vq.init_codebook`.
    """

    name = "rotation"
    description = "VQ-VAE whose gradient is rotated and rescaled from z to its code"
    reference = "Fifty et al., Restructuring Vector Quantization with the Rotation Trick, 2024"

    def _surrogate(self, latents: Tensor, codes: Tensor) -> Tensor:
        """What the gradient of the output flows through: :func:`rotate_to`."""
        return rotate_to(latents, codes)
