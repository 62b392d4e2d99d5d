"""Geometry shared by the quantizers whose gradient is carried from ``z`` to its code ``c``
by a norm-preserving map rescaled by ``||c|| / ||z||``: the rotation trick
(:func:`~tractvq.quantizers.rotation.rotate_to`) and the Householder reflection
(:func:`~tractvq.quantizers.householder.reflect_to`).

Norms are clamped at :data:`NORM_EPS` (as vector-quantize-pytorch's ``rotate_to``), so a zero
latent or code gives a finite, degenerate map. Private to the package (not a stable API).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["NORM_EPS", "directions", "reflect"]

#: Smallest norm divided by (as vector-quantize-pytorch's ``rotate_to``).
NORM_EPS = 1e-6


def directions(latents: Tensor, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit latents, unit codes and the rescaling from one to the other, all constants.

    Parameters
    ----------
    latents : Tensor, shape (N, D)
        Encoder outputs z.
    codes : Tensor, shape (N, D)
        Their codes c.

    Returns
    -------
    latent_directions : Tensor, shape (N, D)
        ``sg(z / ||z||)``.
    code_directions : Tensor, shape (N, D)
        ``sg(c / ||c||)``.
    scale : Tensor, shape (N, 1)
        ``sg(||c|| / ||z||)``.
    """
    z, c = latents.detach(), codes.detach()
    z_norm = z.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)  # (N, 1)
    c_norm = c.norm(dim=1, keepdim=True)  # (N, 1)
    return z / z_norm, c / c_norm.clamp_min(NORM_EPS), c_norm / z_norm


def reflect(normal: Tensor, vectors: Tensor) -> Tensor:
    """``x - 2 n (n^T x)`` for each row ``x`` of ``vectors`` ``(N, D)`` and ``n`` of ``normal``
    ``(N, D)``: the Householder reflection ``(I - 2 n n^T) x`` without a D x D matrix (a
    reflection when ``n`` is a unit vector, the identity when it is 0)."""
    return vectors - 2 * normal * (normal * vectors).sum(dim=1, keepdim=True)
