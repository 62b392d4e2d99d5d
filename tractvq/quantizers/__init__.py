"""The quantizer zoo: every bottleneck behind one interface (:mod:`tractvq.quantizers.base`).

Stands on its own (no dependency on the tractogram code)::

    from tractvq.quantizers import build
    quantizer = build("vqdiff", dim=64, codebook_size=512)
    output = quantizer(latents)          # latents (..., 64), channels last
    output.quantized, output.indices, output.loss, output.stats
"""

from tractvq.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    available,
    build,
    codebook_stats,
    probability_stats,
    register,
)

# Importing each module registers its quantizers, in this order.
from tractvq.quantizers import (  # noqa: F401  isort: skip
    bottlenecks,
    vq,
    ema,
    rotation,
    householder,
    gumbel,
    nsvq,
    diveq,
    sf_diveq,
    gmvq,
    vqdiff,
    fsq,
)

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "available",
    "build",
    "codebook_stats",
    "probability_stats",
    "register",
]
