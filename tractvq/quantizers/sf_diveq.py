"""Space-filling DiVeQ: quantization onto the polyline through the codes.

Vali, Bäckström & Solin, "DiVeQ: Differentiable Vector Quantization Using the
Reparameterization Trick", ICLR 2026 (arXiv 2509.26469), the space-filling variant; reference
package ``diveq`` (github.com/AaltoML/DiVeQ_package, class ``SFDIVEQ``).

The codebook ``c_0 ... c_{K-1}`` is read as a polyline of K - 1 segments. Each training forward
draws one ``lambda_i ~ U(0, 1)`` per segment, forms the dithered points
``d_i = (1 - lambda_i) c_i + lambda_i c_{i+1}``, picks the nearest ``d_i`` and returns::

    z_q = z + (1 - lambda_i) ||c_i - z|| sg[dir_i] + lambda_i ||c_{i+1} - z|| sg[dir_{i+1}]

with the DiVeQ direction ``dir_j = (c_j - z + v_j) / ||c_j - z + v_j||``, ``v_j ~ N(0, sigma^2
I)`` drawn independently for both ends (:mod:`.diveq`). Without noise ``z_q = d_i`` exactly;
the gradient reaches ``z`` and both ends of the chosen segment (through the two lengths).
There is no auxiliary loss. At evaluation ``z`` is projected onto the nearest point of the
polyline (a continuous point, deterministic).

Indices
-------
``indices`` are segment numbers ``i`` in ``0 ... K-2``: the segment from ``c_i`` to
``c_{i+1}`` that holds the output point. An index alone does not say where on its segment the
point lies, so :meth:`SFDiVeQ.indices_to_codes` returns the segment's midpoint
``(c_i + c_{i+1}) / 2`` (the least-squares guess for a point uniform on the segment); it is
not what the decoder saw. ``stats`` perplexity and usage are over the K - 1 segments.

Decisions
---------
- Replacement of unused codes as in :mod:`.diveq` (a code counts as used when a segment it
  ends is chosen). The package has none for SF-DiVeQ; it instead skips quantization for its
  first 1000 calls and then initialises the codebook from means of the latents seen. We do not
  implement that warm-up (it stores 50 batches of latents) and keep DiVeQ's replacement on
  instead; set ``replacement_interval=None`` for the package's behaviour.

Known deviations of reference packages
--------------------------------------
- As in ``DIVEQ``, ``SFDIVEQ``'s ``noise_var`` is used as a standard deviation;
  ``SFDIVEQ(noise_var=s)`` equals our ``noise_variance=s**2`` (tested).
- ``SFDIVEQ.inference`` returns the index of the nearest *code* (not a segment) and projects
  only onto the two segments that end at that code; the nearest point of the polyline can lie
  on another segment (tested). We project onto every segment and return its index.
- ``SFDIVEQ.inference`` needs K >= 3 (it clamps indices to ``[1, K-2]``); we need K >= 2.
- ``SFDIVEQDetach`` (the noise-free variant) scales both error terms along ``c_i - z``, so its
  output is ``c_i``, not the dithered point ``d_i``; ``noise_variance=0`` here gives ``d_i``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tractvq.quantizers._codebook import nearest_codes, squared_distances
from tractvq.quantizers.base import QuantizerOutput, register
from tractvq.quantizers.diveq import DiVeQ

__all__ = ["SFDiVeQ"]


@register
class SFDiVeQ(DiVeQ):
    """Quantization onto the polyline through the codes, trained as DiVeQ at dithered points.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K (K - 1 segments).
    noise_variance : float, optional
        sigma^2, the variance of the directional noise (1e-3 in the paper).
    replacement_interval : int or None, optional
        Replace unused codes after every this many training batches (100, ours: DiVeQ's);
        None: only when :meth:`replace_unused_codes` is called.
    discard_threshold : float, optional
        A code used in less than this fraction of the counted batches is unused (0.01).
    replacement_noise : float, optional
        Standard deviation of the noise added to a replaced code (1e-9).

    Notes
    -----
    See the module docstring for what ``indices`` mean. Codebook, usage buffers and
    ``stats["dead_codes"]`` as in :class:`~.nsvq.NSVQ`; the codes start U(0, 1/K).
    """

    name = "sf-diveq"
    description = "space-filling DiVeQ: dithered points on the polyline of the codes"
    reference = "Vali, Bäckström & Solin, DiVeQ, ICLR 2026 (arXiv 2509.26469)"

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        codebook = self.codebook.weight
        if self.training:
            self._replace_if_due()
            dither = torch.rand(self.codebook_size - 1, 1, device=latents.device)  # lambda
            dithered = ((1 - dither) * codebook[:-1] + dither * codebook[1:]).detach()  # d
            indices = nearest_codes(latents.detach(), dithered)  # (N,)
            share = dither[indices]  # lambda_i, (N, 1)
            quantized = (
                latents
                + (1 - share) * self._error(latents, codebook[indices])
                + share * self._error(latents, codebook[indices + 1])
            )
            self._count_usage(torch.cat([indices, indices + 1]))
        else:
            quantized, indices = self._project(latents)
        return QuantizerOutput(
            quantized, indices, latents.new_zeros(()), self._stats(indices, self.codebook_size - 1)
        )

    def _project(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest point ``(N, D)`` of the polyline and the index ``(N,)`` of its segment.

        On segment j, from ``c_j`` along ``e_j = c_{j+1} - c_j``, the nearest point is
        ``p_j = c_j + t_j e_j`` with ``t_j = clamp(<z - c_j, e_j> / ||e_j||^2, 0, 1)``.
        """
        starts, ends = self.codebook.weight[:-1], self.codebook.weight[1:]  # (K-1, D)
        edges = ends - starts
        lengths = edges.pow(2).sum(dim=1).clamp_min(1e-12)  # ||e_j||^2, (K-1,)
        along = latents @ edges.t() - (starts * edges).sum(dim=1)  # <z - c_j, e_j>, (N, K-1)
        position = (along / lengths).clamp(0, 1)  # t_j
        offsets = squared_distances(latents, starts)  # ||z - c_j||^2
        distances = offsets - 2 * position * along + position.pow(2) * lengths  # ||z - p_j||^2
        indices = distances.argmin(dim=1)
        chosen = position.gather(1, indices[:, None])  # (N, 1)
        return starts[indices] + chosen * edges[indices], indices

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Midpoints ``(c_i + c_{i+1}) / 2`` of the segments ``indices`` (see module docstring)."""
        return (self.codebook(indices) + self.codebook(indices + 1)) / 2
