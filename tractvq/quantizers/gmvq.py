"""GM-VQ: Gaussian mixture vector quantization with the aggregated categorical posterior ELBO.

Yan, Wu, Shah & Liu, "Gaussian Mixture Vector Quantization with Aggregated Categorical
Posterior", arXiv 2410.10180 (2024). No public code exists; this module is derived from the
paper's model and objective as summarised below. Choices that are ours are marked (ours).

Derivation
----------
Generative model (the paper's): a code ``c`` with uniform prior ``p(c) = 1/K``, a continuous
latent ``z | c ~ N(mu_c, sigma_z^2 I_D)`` centred on codeword ``mu_c`` with a fixed variance,
and the decoder ``p(x | z)``.

Variational posterior, from the encoder output ``zh`` (this quantizer's input):

- ``q(c | x) = softmax_c(l_c)``, ``l_c = -||zh - mu_c||^2 / (2 sigma_z^2)``: the
  responsibility the generative mixture gives component c at ``zh``, ``p(c | z = zh)``
  (ours: in the paper the encoder also emits "raw weights" for q(c|x); a quantizer sees
  only the latent, so the logits come from it).
- ``q(z | x, c) = N(mu_c, s_c(x)^2 I_D)`` with the data-dependent variance
  ``s_c(x)^2 = ||zh - mu_c||^2 / D`` (ours: isotropic, set by the distance from the encoder
  output to the codeword, so ``E||z - mu_c||^2 = ||zh - mu_c||^2``: the noise stands for the
  quantization error, as in NSVQ).

ELBO: ``log p(x) >= E_q[log p(x|z)] - E_q(c|x)[KL(q(z|x,c) || p(z|c))] - KL(q(c|x) || p(c))``.
ALBO (the paper's): the last term, averaged over the data, is replaced by the KL of the
aggregated posterior ``q(c) = E_x q(c|x)`` to the prior. Since
``E_x KL(q(c|x) || p) = KL(q(c) || p) + I(x; c)``, this drops the mutual-information penalty
that works against using the codes, and keeps ``KL(q(c) || p)``, which rewards using all of
them. ``q(c)`` is estimated by the batch mean ``qbar`` of ``q(c|x)``.

The two KL terms in closed form (the Gaussians share their mean)::

    KL_c  = KL(N(mu_c, s_c^2 I) || N(mu_c, sigma_z^2 I)) = D/2 (r_c - 1 - log r_c),
            r_c = s_c^2 / sigma_z^2 = ||zh - mu_c||^2 / (D sigma_z^2)
    KL_agg = KL(qbar || uniform) = sum_c qbar_c log(K qbar_c)

Sampling: ``c`` by the straight-through Gumbel-softmax on ``l`` at temperature tau (the
Gumbel-max trick draws ``c ~ q(c|x)`` exactly; tau only shapes the gradient), then the
reparameterised ``z = mu_c + s_c(x) eps``, ``eps ~ N(0, I)``. With ``y`` the straight-through
one-hot this is ``z = y @ mu + (y . s) eps``, linear in ``y``, so the gradient reaches the
logits, the chosen codeword and ``zh``. ``E_q(c|x)[KL_c]`` is estimated at the same sample,
``sum_c y_c KL_c``. The quantizer's loss is the ALBO's regularisers (the reconstruction term is
the model's)::

    loss = latent_weight * mean_n sum_c y_nc KL_nc + kl_weight * KL_agg

Evaluation (deterministic): ``c* = argmax l`` (the most probable code, which is the nearest),
``z = mu_c*`` (the mean of ``q(z|x,c*)``), and the same loss with ``y = onehot(c*)``.

Hyperparameters
---------------
- ``temperature`` 2.0 annealed to ``min_temperature`` 0.1: the paper's schedule end points.
  ``anneal_rate`` 1e-4 (ours): ``2 exp(-1e-4 t)`` reaches 0.1 after about 30,000 steps, the
  length of the published VQ-Diff training. The trainer calls ``set_step(step)``
  (:class:`~tractvq.quantizers._codebook.AnnealedTemperature`).
- ``prior_std`` sigma_z = 1.0 (ours; the paper fixes sigma_z but we have no value).
- ``kl_weight`` (the paper's beta) and ``latent_weight`` (gamma) = 5e-4 (ours): both terms
  are nats per latent vector added to a per-element reconstruction MSE, the setting of
  taming's Gumbel quantizer (KL weight 5e-4). For this project's bundles (12,288 numbers,
  256 latent vectors) the unweighted ALBO with a Gaussian decoder of noise std sigma_x,
  rescaled to a mean squared error, weighs both terms sigma_x^2 / 24: 5e-4 is sigma_x = 0.11.
- Codebook N(0, 1) (ours; the paper initialises it by k-means on encoder outputs).
- The variance ``s_c^2`` is floored at 1e-12 (a latent exactly on a codeword would make
  ``KL_c`` infinite).

``stats`` add ``soft_perplexity`` (exp of the entropy of ``qbar``, the aggregated posterior),
``latent_kl`` and ``aggregate_kl`` (the two unweighted terms) and ``temperature``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tractvq.quantizers import _relaxed
from tractvq.quantizers._codebook import AnnealedTemperature, distance_logits
from tractvq.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    codebook_stats,
    probability_stats,
    register,
)
from tractvq.quantizers.vq import init_codebook

__all__ = ["GMVQ"]


def _std_and_kl_of_logits(logits: Tensor, prior_std: float, dim: int) -> tuple[Tensor, Tensor]:
    """``s_c`` and ``KL_c`` at the distances ``-2 sigma_z^2 l`` of logits ``l`` (any shape),
    without gradient."""
    variance = (logits * (-2 * prior_std**2 / dim)).clamp_min_(1e-12)  # s_c^2
    std = variance.sqrt()  # s_c
    ratio = variance.div_(prior_std**2)  # r_c
    log_ratio = ratio.log()
    return std, ratio.sub_(1).sub_(log_ratio).mul_(0.5 * dim)  # KL_c


class _MixtureChoice(torch.autograd.Function):
    """A training step's Gumbel-max components of logits ``A B^T`` ``(N, K)``, block by block
    (:mod:`tractvq.quantizers._relaxed`), with the straight-through gradient of the one-hot
    ``y = onehot(c) - sg(s) + s``.

    Returns ``y @ means`` ``(N, D)``, ``y . s_c`` and ``y . KL_c`` ``(N, 1)`` (the tables as
    constants), the aggregated posterior ``qbar = mean_n softmax(l)_n`` ``(K,)`` and ``c``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, means: Tensor, temperature: float, seed: int, prior_std: float):
        count, size = len(a), len(b)
        draws = _relaxed.UniformSource(seed, a.device)
        sample = a.new_empty(count, size)  # s, (N, K)
        indices = torch.empty(count, dtype=torch.int64, device=a.device)
        chosen_logits = a.new_empty(count, 1)
        log_normaliser = a.new_empty(count, 1)  # logsumexp(l), (N, 1)
        aggregate = a.new_zeros(size)
        for rows in _relaxed.row_blocks(count, size):
            logits = a[rows] @ b.t()
            _, indices[rows] = _relaxed.relaxed_sample_(draws.fill_(sample[rows]), logits, temperature)
            chosen_logits[rows] = logits.gather(1, indices[rows, None])
            posterior, _, log_normaliser[rows] = _relaxed.log_softmax_rows(logits)
            aggregate += posterior.sum(dim=0)
        ctx.save_for_backward(a, b, means, sample, indices, log_normaliser)
        ctx.temperature, ctx.prior_std = temperature, prior_std
        ctx.mark_non_differentiable(indices)
        std, kl = _std_and_kl_of_logits(chosen_logits, prior_std, means.shape[1])
        return means[indices], std, kl, aggregate / count, indices

    @staticmethod
    def backward(ctx, grad_rows: Tensor, grad_std: Tensor, grad_kl: Tensor, grad_aggregate: Tensor, _):
        a, b, means, sample, indices, log_normaliser = ctx.saved_tensors
        grad_a, grad_b = torch.empty_like(a), torch.zeros_like(b)
        grad_posterior = grad_aggregate / len(a)  # (K,)
        for rows in _relaxed.row_blocks(*sample.shape):
            logits = a[rows] @ b.t()
            table_std, table_kl = _std_and_kl_of_logits(logits, ctx.prior_std, means.shape[1])
            grad_sample = table_std.mul_(grad_std[rows]).addcmul_(table_kl, grad_kl[rows])
            grad_sample.addmm_(grad_rows[rows], means.t())
            grad_logits = _relaxed.softmax_backward_(grad_sample, sample[rows], ctx.temperature)
            posterior, _, _ = _relaxed.log_softmax_rows(logits, log_normaliser[rows])
            grad_logits += posterior.mul_(grad_posterior - (posterior @ grad_posterior)[:, None])  # softmax'
            grad_logits = _relaxed.flush_subnormal(grad_logits)
            torch.mm(grad_logits, b, out=grad_a[rows])
            grad_b.addmm_(grad_logits.t(), a[rows])
        grad_means = torch.zeros_like(means).index_add_(0, indices, grad_rows)  # y^T grad
        return grad_a, grad_b, grad_means, None, None, None


@register
class GMVQ(AnnealedTemperature, Quantizer):
    """Gaussian-mixture quantizer: Gumbel-chosen codeword plus data-scaled Gaussian noise.

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes (mixture components) K.
    prior_std : float, optional
        sigma_z, the standard deviation of each mixture component (1.0, ours).
    latent_weight : float, optional
        Weight gamma of the latent KL term (5e-4, ours).
    kl_weight : float, optional
        Weight beta of the aggregated-posterior KL to the uniform prior (5e-4, ours).
    temperature : float, optional
        Starting Gumbel-softmax temperature (2.0, the paper).
    min_temperature : float, optional
        Floor of the annealed temperature (0.1, the paper).
    anneal_rate : float, optional
        r of ``tau_0 exp(-r step)`` (1e-4, ours).

    Notes
    -----
    The codebook of means is ``self.codebook`` (:class:`torch.nn.Embedding`).
    """

    name = "gmvq"
    description = "GM-VQ: Gumbel-chosen codeword plus Gaussian noise, aggregated-posterior ELBO"
    reference = "Yan et al., Gaussian Mixture Vector Quantization (arXiv 2410.10180)"

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        prior_std: float = 1.0,  # sigma_z of p(z|c); ours
        latent_weight: float = 5e-4,  # gamma; ours (see module docstring)
        kl_weight: float = 5e-4,  # beta; ours (see module docstring)
        temperature: float = 2.0,  # GM-VQ paper: tau annealed from 2.0 ...
        min_temperature: float = 0.1,  # ... to 0.1
        anneal_rate: float = 1e-4,  # ours: 0.1 after ~30,000 steps
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if not prior_std > 0:
            raise ValueError(f"prior_std must be positive, got {prior_std!r}")
        if not latent_weight >= 0:
            raise ValueError(f"latent_weight must be >= 0, got {latent_weight!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self._init_temperature(temperature, min_temperature, anneal_rate)
        self.prior_std = float(prior_std)
        self.latent_weight = float(latent_weight)
        self.kl_weight = float(kl_weight)
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.copy_(init_codebook(self.codebook_size, self.dim, "normal"))

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        means = self.codebook.weight  # mu, (K, D)
        scale = 0.5 / self.prior_std**2  # l = -scale ||zh - mu||^2 = log q(c|x) + const
        if self.training:
            factors = _relaxed.distance_factors(latents, means, scale)
            chosen_means, table_std, table_kl, aggregate, indices = _MixtureChoice.apply(
                *factors, means, self.temperature, _relaxed.noise_seed(), self.prior_std
            )
        else:
            logits = distance_logits(latents, means, scale)
            indices = logits.argmax(dim=1)
            aggregate = logits.softmax(dim=1).mean(dim=0)  # qbar, (K,)
        # The one-hot y reads KL_c and s_c at the chosen code: their gradient reaches the
        # distance there (*_at_code), while the relaxed gradient of y needs them for every code,
        # as constants (table_*).
        chosen = (latents - means[indices]).pow(2).sum(dim=1, keepdim=True)  # (N, 1)
        std_at_code, kl_at_code = self._std_and_kl(chosen)
        if self.training:
            noise = torch.randn_like(latents)  # eps, (N, D)
            std = table_std + (std_at_code - std_at_code.detach())  # y . s, (N, 1)
            latent_kl = table_kl + (kl_at_code - kl_at_code.detach())  # y . KL, (N, 1)
            quantized = chosen_means + std * noise  # y @ mu + (y . s) eps
        else:
            latent_kl = kl_at_code  # y = onehot(c*)
            quantized = self.codebook(indices)
        log_ratio = aggregate.clamp_min(1e-12).log() + math.log(self.codebook_size)
        aggregate_kl = (aggregate * log_ratio).sum()  # KL(qbar || uniform)
        chosen_kl = latent_kl.sum(dim=1).mean()
        loss = self.latent_weight * chosen_kl + self.kl_weight * aggregate_kl
        stats = codebook_stats(indices, self.codebook_size)
        stats["soft_perplexity"] = probability_stats(aggregate)["perplexity"]
        stats["latent_kl"] = chosen_kl
        stats["aggregate_kl"] = aggregate_kl
        stats["temperature"] = latents.new_tensor(self.temperature)
        return QuantizerOutput(quantized, indices, loss, stats)

    def _std_and_kl(self, distances: Tensor) -> tuple[Tensor, Tensor]:
        """``s_c`` and ``KL_c`` of distances ``||zh - mu_c||^2`` (any shape)."""
        variance = (distances / self.dim).clamp_min(1e-12)  # s_c^2
        ratio = variance / self.prior_std**2  # r_c
        return variance.sqrt(), 0.5 * self.dim * (ratio - 1 - ratio.log())  # s_c, KL_c

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)
