"""The one interface every tractvq bottleneck implements, and the registry of them.

A quantizer is an :class:`torch.nn.Module` that maps latents ``(..., D)`` (channels last)
to a :class:`QuantizerOutput` of the same shape. Subclasses implement :meth:`Quantizer.quantize`
on a flat float32 batch ``(N, D)``; the base class reshapes, checks the input, switches
autocast off (quantization math always runs in float32) and computes the codebook statistics
the same way for every method.

Register a subclass with :func:`register`; build one by name with :func:`build`.
"""

from __future__ import annotations

import inspect
import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "available",
    "build",
    "codebook_stats",
    "probability_stats",
    "register",
]


class QuantizerOutput(NamedTuple):
    """What every quantizer returns.

    Attributes
    ----------
    quantized : Tensor, shape (..., D)
        The bottleneck's output, same shape and dtype as the input.
    indices : Tensor of int64, shape (...), or None
        The chosen code of each vector; None for continuous bottlenecks.
    loss : Tensor, scalar
        The method's auxiliary loss (zero where it has none), to add to the reconstruction
        loss.
    stats : dict of str to Tensor (scalars, detached)
        ``perplexity`` (exp of the entropy of the batch's code distribution) and ``usage``
        (fraction of the codebook used in the batch) for every method with a codebook;
        ``dead_codes`` where the method tracks usage over time.
    """

    quantized: Tensor
    indices: Tensor | None
    loss: Tensor
    stats: dict[str, Tensor]


_REGISTRY: dict[str, type[Quantizer]] = {}


def register(cls: type[Quantizer]) -> type[Quantizer]:
    """Class decorator: make a quantizer buildable by its ``name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY:
        raise TypeError(f"quantizer name {cls.name!r} is taken by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[tuple[str, str, str]]:
    """``(name, description, reference)`` of every registered quantizer, in registration order."""
    return [(cls.name, cls.description, cls.reference) for cls in _REGISTRY.values()]


def build(name: str, dim: int, codebook_size: int = 512, **options) -> Quantizer:
    """Build a registered quantizer.

    Parameters
    ----------
    name : str
        A name from :func:`available`.
    dim : int
        Size D of each latent vector.
    codebook_size : int, optional
        Number of codes K (ignored by bottlenecks without a codebook).
    **options
        Method-specific keywords (see each class).

    Returns
    -------
    Quantizer

    Raises
    ------
    ValueError
        If ``name`` is unknown or an option is not one the method takes.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown quantizer {name!r}; choose one of: {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    accepted = [
        parameter
        for parameter in inspect.signature(cls.__init__).parameters
        if parameter not in ("self", "dim", "codebook_size")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"quantizer {name!r} takes no option {', '.join(map(repr, unknown))};"
            f" its options are: {', '.join(accepted) or 'none'}"
        )
    if "codebook_size" in inspect.signature(cls.__init__).parameters:
        options["codebook_size"] = codebook_size
    return cls(dim, **options)


#: Largest codebook whose code histogram is a dense ``(K,)`` tensor.
_DENSE_HISTOGRAM_LIMIT = 1 << 20


def codebook_stats(indices: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Perplexity and usage of hard code assignments.

    Parameters
    ----------
    indices : Tensor of int64
        Chosen codes, any shape.
    codebook_size : int

    Returns
    -------
    dict
        ``perplexity`` = exp(entropy of the code histogram), ``usage`` = fraction of codes
        chosen at least once.
    """
    if codebook_size > _DENSE_HISTOGRAM_LIMIT:  # e.g. FSQ with 2**36 implicit codes: count the codes seen
        _, counts = torch.unique(indices.reshape(-1), return_counts=True)
        probabilities = counts.float() / counts.sum().clamp_min(1)
        entropy = -(probabilities * probabilities.log()).sum()
        return {"perplexity": entropy.exp(), "usage": entropy.new_tensor(len(counts) / codebook_size)}
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
    return probability_stats(counts / counts.sum().clamp_min(1), used=counts > 0)


def probability_stats(mean_probabilities: Tensor, used: Tensor | None = None) -> dict[str, Tensor]:
    """Perplexity and usage of an average code distribution ``(K,)``.

    ``usage`` counts the codes in ``used`` (default: codes with probability above 1e-6 of
    the total).
    """
    probabilities = mean_probabilities.detach().float()
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum()
    if used is None:
        used = probabilities > 1e-6
    return {"perplexity": entropy.exp(), "usage": used.float().mean()}


class Quantizer(nn.Module):
    """Base class of every bottleneck.

    Parameters
    ----------
    dim : int
        Size D of each latent vector (the last axis of the input).

    Notes
    -----
    Subclasses set the class attributes ``name`` (registry key), ``description`` (one line),
    ``reference`` (the paper) and ``discrete`` (whether ``indices`` are returned), and
    implement :meth:`quantize`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    discrete: ClassVar[bool] = True

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)

    @staticmethod
    def _check_codebook_size(codebook_size: int) -> int:
        if isinstance(codebook_size, bool) or int(codebook_size) != codebook_size or codebook_size < 2:
            raise ValueError(f"codebook_size must be an integer >= 2, got {codebook_size!r}")
        return int(codebook_size)

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantize ``latents`` of shape ``(..., D)``.

        Parameters
        ----------
        latents : Tensor, shape (..., D)

        Returns
        -------
        QuantizerOutput
        """
        if latents.ndim < 1 or latents.shape[-1] != self.dim:
            raise ValueError(f"expected latents of shape (..., {self.dim}), got {tuple(latents.shape)}")
        flat = latents.reshape(-1, self.dim)
        with torch.autocast(device_type=latents.device.type, enabled=False):
            output = self.quantize(flat.float())
        indices = None if output.indices is None else output.indices.reshape(latents.shape[:-1])
        return QuantizerOutput(
            quantized=output.quantized.reshape(latents.shape).to(latents.dtype),
            indices=indices,
            loss=output.loss.float(),
            stats={key: value.detach() for key, value in output.stats.items()},
        )

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        """Quantize a flat float32 batch ``(N, D)``; see :meth:`forward`."""
        raise NotImplementedError

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """The code vectors ``(..., D)`` of ``indices`` ``(...)``: what the decoder sees at
        evaluation for these indices.

        Raises
        ------
        ValueError
            For continuous bottlenecks, which have no indices.
        """
        raise ValueError(f"quantizer {self.name!r} is continuous: it has no indices")

    @property
    def bits_per_index(self) -> float:
        """Bits needed to store one index (log2 of the number of codes); 0 if continuous."""
        size = getattr(self, "codebook_size", None)
        return math.log2(size) if self.discrete and size else 0.0
