"""VQ-Diff: the soft Gumbel-weighted codebook quantizer.

"Differentiable VQ-VAE's for Robust White Matter Streamline Encodings" (arXiv 2311.06212),
published code github.com/drewrl3v/diff-vq-vae (``run_experiments/models.py``).

The codebook ``e`` (K x D) is drawn N(0, 2^2). Each latent ``z`` is replaced by a
Gumbel-softmax weighted mean of all codes::

    w = gumbel_softmax(-||z - e_i||^2, tau),   s = sum_i w_i e_i,   tau = 10

i.e. ``w = softmax((-||z - e||^2 + g) / tau)`` with ``g ~ Gumbel(0, 1)``; fully differentiable,
no auxiliary loss (the paper argues the KL term is constant, so the loss is the
reconstruction alone). The output is continuous: ``indices`` (the largest weight) only
summarise it.

Evaluation modes (``eval_mode``)
--------------------------------
- ``"sample"``: as published, the Gumbel noise is drawn at evaluation too (stochastic).
- ``"mean"``: ``softmax(-||z - e||^2 / tau)`` without noise (deterministic, still a mixture).
- ``"hard"``: the nearest code, a discrete index, ``indices_to_codes(indices)`` exactly.

Training always samples. ``indices`` are the argmax of the weights (the nearest code in
``"mean"`` and ``"hard"``); ``stats`` adds ``soft_perplexity``, the perplexity of the batch's
mean weights. :meth:`VQDiff.indices_to_codes` returns codebook rows (the ``"hard"`` decoding).

Loading the published model: its ``_vq_vae._embedding.weight`` (512, 64) is this module's
``codebook.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.quantizers._codebook import distance_logits, nearest_codes, relaxed_gumbel_sample
from tractvq.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    codebook_stats,
    probability_stats,
    register,
)

__all__ = ["VQDiff"]

EVAL_MODES = ("sample", "mean", "hard")


@register
class VQDiff(Quantizer):
    """Gumbel-softmax weighted mean of Gaussian-initialised codes (VQ-Diff).

    Parameters
    ----------
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K.
    temperature : float, optional
        tau of the Gumbel-softmax (10, the published code).
    init_std : float, optional
        Standard deviation of the N(0, std^2) initial codes (2.0, the published code).
    eval_mode : {"sample", "mean", "hard"}, optional
        Output at evaluation (see the module docstring); ``"sample"`` as published.

    Notes
    -----
    The codebook is ``self.codebook`` (:class:`torch.nn.Embedding`).
    """

    name = "vqdiff"
    description = "VQ-Diff: Gumbel-softmax weighted mean of the codes (soft, continuous)"
    reference = (
        "Differentiable VQ-VAE's for Robust White Matter Streamline Encodings, arXiv 2311.06212"
    )

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        temperature: float = 10.0,  # tau, published models.py gumbel_softmax(tau=10)
        init_std: float = 2.0,  # published models.py: codebook N(0, 2.0^2)
        eval_mode: str = "sample",  # published: Gumbel noise at evaluation too
    ):
        super().__init__(dim)
        self.codebook_size = self._check_codebook_size(codebook_size)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std!r}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {', '.join(EVAL_MODES)}; got {eval_mode!r}")
        self.temperature = float(temperature)
        self.eval_mode = eval_mode
        self.codebook = nn.Embedding(self.codebook_size, self.dim)
        with torch.no_grad():
            self.codebook.weight.normal_(0.0, init_std)

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        mode = "sample" if self.training else self.eval_mode
        if mode == "hard":
            indices = nearest_codes(latents.detach(), self.codebook.weight.detach())
            quantized = self.codebook(indices)  # exact rows
            weights = F.one_hot(indices, self.codebook_size).to(quantized.dtype)
        else:
            codebook = self.codebook.weight
            if mode == "sample":
                logits = distance_logits(latents, codebook)  # -||z - e||^2, (N, K)
                weights = relaxed_gumbel_sample(logits, self.temperature)  # w
            else:  # softmax(-||z - e||^2 / tau)
                weights = distance_logits(latents, codebook, 1 / self.temperature).softmax(dim=1)
            indices = weights.argmax(dim=1)
            quantized = weights @ codebook  # sum_i w_i e_i, (N, D)
        stats = codebook_stats(indices, self.codebook_size)
        stats["soft_perplexity"] = probability_stats(weights.mean(dim=0))["perplexity"]
        return QuantizerOutput(quantized, indices, latents.new_zeros(()), stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        return self.codebook(indices)
