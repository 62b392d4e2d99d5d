"""Rotational and rescaling VQ-VAE: a Householder reflection carries the gradient.

"Rotational and Rescaling Vector Quantized Variational Autoencoders" (AI-Researcher; summary
``003`` of the project's reference papers). An EMA codebook (gamma 0.99) with the commitment
loss (beta 0.25); the decoder's gradient reaches the encoder through a Householder reflection
that aligns the encoder output with its code, rescaled adaptively, while the forward value
stays the code.

Which equation each step implements (numbers of the summary)
------------------------------------------------------------
- (2) ``indices = argmin_j ||z - e_j||^2``: :func:`tractvq.quantizers._codebook.nearest_codes`.
- (3)-(5) = (9)-(11) ``N_i = gamma N_i + (1 - gamma) n_i``, ``m_i = gamma m_i + (1 - gamma)
  sum_j z_ij``, ``e_i = m_i / N_i``: :meth:`tractvq.quantizers.ema.EMACodebook.update`.
- (1) = (6) = (7) ``||sg(z) - e||^2 + beta ||z - sg(e)||^2``: with an EMA codebook the first
  term moves nothing (the codes are not parameters; (3)-(5) replace it, as in appendix A.1
  of van den Oord et al. 2017), so ``loss = beta ||z - sg(e)||^2`` (mean reduction).
- "Encoder outputs and codebook vectors are reshaped and normalized": ``u = z / ||z||``,
  ``w = e / ||e||`` (:func:`reflect_to`).
- "Rotation is achieved with a reflection vector from the Householder matrix":
  ``v = (u - w) / ||u - w||``, ``H = I - 2 v v^T``, so ``H u = w`` (applied as
  ``z - 2 v (v^T z)``, no D x D matrix).
- "Adaptive scaling adjusts gradient magnitudes": ``s = ||e|| / ||z||``, so ``s H z = e``.
- (8) ``z_q = z + (z_q_transformed - z).detach()``: output ``sg(e) + (t - sg(t))`` with
  ``t = sg(s) sg(H) z``: value ``e``, gradient to the encoder ``s H g`` (H is symmetric).

Decisions where the summary is ambiguous
----------------------------------------
- Eq. (8) read literally (the transformed vector inside ``detach``) would pass the identity
  gradient and change the forward value, contradicting sec. 2.1 ("aligning the outputs with
  codebook vectors for stabilized gradient propagation without altering the forward pass")
  and sec. 2.4 (the transforms "enhance gradient flow"). We keep the forward value ``e`` and
  route the gradient through the transform.
- The rescaling factor has no formula ("based on encoder-codebook distances"). We take
  ``||e|| / ||z||``: it is adaptive per vector and the factor that makes the transform take
  ``z`` exactly to ``e`` (the "rotational and rescaling transformation" of sec. 2.1), as in the
  rotation trick (Fifty et al., arXiv 2410.06424), which this method builds on.
- One reflection, as the summary says, not the rotation trick's two: ``H`` has determinant
  -1, so within the plane of ``z`` and ``e`` the gradient component orthogonal to ``e`` comes
  back with the opposite sign to the rotation trick's. When ``z`` already points along ``e``
  the reflection vector is undefined (the map has no limit there): ``v`` is normalised with
  ``max(||u - w||, 1e-6)``, so it shrinks to 0 and ``H`` to ``I`` (the rescaled
  straight-through gradient) as ``z`` turns onto ``e`` within 1e-6.
- Eq. (5) has no smoothing; like ``vq-ema`` we divide by the Laplace-smoothed cluster size
  (eps 1e-5), which differs from ``N_i`` by O(K eps / sum N) and avoids dividing by zero.
- The summary's "adaptive EMA update mechanism prevents collapse" names no mechanism beyond
  (9)-(11): dead-code revival is available (``revive_dead_codes``) but off by default.
- Initial codes N(0, 1), as ``vq-ema``; the summary gives K = 1024 codes of 256 dims for
  CIFAR-10 (here K and D are the caller's).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from tractvq.quantizers._geometry import NORM_EPS, directions, reflect
from tractvq.quantizers.base import register
from tractvq.quantizers.ema import EMAVectorQuantizer

__all__ = ["HouseholderVQ", "reflect_to"]


def reflect_to(latents: Tensor, codes: Tensor) -> Tensor:
    """The rescaled Householder reflection ``t = sg(s H) z`` of latents towards their codes.

    Parameters
    ----------
    latents : Tensor, shape (N, D)
        Encoder outputs z (the gradient flows to them).
    codes : Tensor, shape (N, D)
        Their codes e (treated as constants).

    Returns
    -------
    Tensor, shape (N, D)
        ``(||e|| / ||z||) (z - 2 v (v^T z))`` with ``v`` the unit vector along
        ``z/||z|| - e/||e||``; numerically ``e``, Jacobian ``(||e|| / ||z||) H``.
    """
    u, w, scale = directions(latents, codes)  # (N, D), (N, D), (N, 1)
    v = F.normalize(u - w, dim=1, eps=NORM_EPS)  # reflection vector, (N, D)
    return scale * reflect(v, latents)


@register
class HouseholderVQ(EMAVectorQuantizer):
    """EMA-codebook VQ whose gradient passes through the rescaled Householder reflection.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    commitment : float, optional
        beta of the commitment loss; 0.25 (summary eq. 1).
    decay : float, optional
        EMA decay gamma; 0.99 (summary eqs. 3-5).
    eps : float, optional
        Laplace smoothing of the cluster sizes (see the module's decisions).
    revive_dead_codes : bool, optional
        As ``vq-ema``; off by default.
    dead_code_threshold : float, optional
        As ``vq-ema``.
    init : {"uniform", "normal"}, optional
        Codebook initialisation, as ``vq-ema``.
    """

    name = "householder"
    description = "EMA VQ whose gradient is reflected (Householder) and rescaled from z to its code"
    reference = "Rotational and Rescaling Vector Quantized Variational Autoencoders (AI-Researcher)"

    def _surrogate(self, latents: Tensor, codes: Tensor) -> Tensor:
        """What the gradient of the output flows through: :func:`reflect_to`."""
        return reflect_to(latents, codes)
