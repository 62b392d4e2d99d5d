"""Continuous bottlenecks: the plain autoencoder and the VAE.

``identity`` passes the latents through (the "AE" baseline of the VQ-Diff paper).
``gaussian`` is the VAE bottleneck of Kingma & Welling, "Auto-Encoding Variational Bayes",
ICLR 2014 (arXiv 1312.6114): a mean and a log-variance head, the reparameterisation
``z = mu + exp(logvar / 2) * eps`` (sec. 2.4) and the closed-form KL divergence to N(0, I)
(appendix B), weighted. The published comparison of "Differentiable VQ-VAE's for Robust White
Matter Streamline Encodings" (VQ-Diff, arXiv 2311.06212) used a 20-d latent and a KL weight
of 1e-7.

Known deviations of reference packages
--------------------------------------
The published VQ-Diff VAE (``VAELayer`` of its ``models.py``) is not a per-vector bottleneck:
two strided convolutions and a linear layer encode the whole latent grid into one 20-d
vector, and its KL is summed over the batch, not averaged. Here the heads act on each latent
vector ``(..., D)`` and the KL is the mean over vectors, so the same weight is weaker.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tractvq.quantizers.base import Quantizer, QuantizerOutput, register

__all__ = ["GaussianBottleneck", "Identity"]


@register
class Identity(Quantizer):
    """No bottleneck: the output is the input (continuous, no loss)."""

    name = "identity"
    description = "plain autoencoder: the latents pass unchanged"
    reference = "the AE baseline of VQ-Diff (arXiv 2311.06212)"
    discrete = False

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        return QuantizerOutput(latents, None, latents.new_zeros(()), {})


@register
class GaussianBottleneck(Quantizer):
    """VAE bottleneck with a diagonal Gaussian posterior and a standard-normal prior.

    Parameters
    ----------
    dim : int
        Size D of each latent vector (input and output).
    latent_dim : int, optional
        Size of the Gaussian latent; default D. The heads are ``Linear(D, latent_dim)``; when
        ``latent_dim != D`` a ``Linear(latent_dim, D)`` projects the sample back to D.
    kl_weight : float, optional
        Weight of the KL term in ``loss``; 1e-7 as in the published VQ-Diff VAE baseline
        (1 gives the ELBO of Kingma & Welling).

    Notes
    -----
    Training mode samples ``mu + sigma * eps`` with ``eps`` from torch's RNG; evaluation mode
    returns the mean. ``loss = kl_weight * KL`` in both modes, with KL the mean over vectors of
    ``0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)``; ``stats["kl"]`` is that KL.
    """

    name = "gaussian"
    description = "VAE: Gaussian posterior, reparameterised sample, weighted KL to N(0, I)"
    reference = "Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014"
    discrete = False

    def __init__(
        self,
        dim: int,
        *,
        latent_dim: int | None = None,  # the published VQ-Diff VAE used 20
        kl_weight: float = 1e-7,  # the published VQ-Diff VAE baseline
    ):
        super().__init__(dim)
        latent_dim = self.dim if latent_dim is None else latent_dim
        if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self.latent_dim = int(latent_dim)
        self.kl_weight = float(kl_weight)
        self.mean = nn.Linear(self.dim, self.latent_dim)
        self.log_variance = nn.Linear(self.dim, self.latent_dim)
        self.project_out = (
            nn.Identity() if self.latent_dim == self.dim else nn.Linear(self.latent_dim, self.dim)
        )

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        mean = self.mean(latents)  # (N, latent_dim)
        log_variance = self.log_variance(latents)  # (N, latent_dim)
        kl = 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).sum(dim=1).mean()
        sample = mean
        if self.training:
            sample = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        return QuantizerOutput(self.project_out(sample), None, self.kl_weight * kl, {"kl": kl})
