"""A bundle autoencoder: encoder, any bottleneck of the quantizer registry, decoder.

One class covers the AE (``identity``), the VAE (``gaussian``), VQ-VAEs with any quantizer and
VQ-Diff (``vqdiff``): they differ only in :attr:`ModelConfig.bottleneck`. The data flow::

    groups (B, 3, S, P) --encoder--> latents (B, h, w, D) --quantizer--> QuantizerOutput
        --decoder--> reconstruction (B, 3, S, P)

Latents are channels-last, as every quantizer takes them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.models.basis import BasisDecoder, BasisEncoder
from tractvq.models.compact import (
    CompactDecoder,
    CompactEncoder,
    StreamlineDecoder,
    StreamlineEncoder,
)
from tractvq.models.config import ModelConfig
from tractvq.models.paper import PaperDecoder, PaperEncoder
from tractvq.quantizers import QuantizerOutput, build

__all__ = ["BundleAutoencoder", "ModelOutput"]

_ARCHITECTURES = {  # (preset, layout) -> (encoder, decoder)
    ("paper", "grid"): (PaperEncoder, PaperDecoder),
    ("compact", "grid"): (CompactEncoder, CompactDecoder),
    ("compact", "streamline"): (StreamlineEncoder, StreamlineDecoder),
    ("basis", "streamline"): (BasisEncoder, BasisDecoder),
}


class ModelOutput(NamedTuple):
    """What :meth:`BundleAutoencoder.forward` returns.

    Attributes
    ----------
    reconstruction : Tensor, shape (B, 3, S, P)
        The decoded groups, in the model's normalised coordinates.
    quantizer_output : QuantizerOutput
        The bottleneck's output on the latents ``(B, h, w, D)``.
    """

    reconstruction: Tensor
    quantizer_output: QuantizerOutput


class BundleAutoencoder(nn.Module):
    """Encoder, bottleneck and decoder of groups of streamlines ``(B, 3, S, P)``.

    Parameters
    ----------
    config : ModelConfig
        Every hyperparameter, stored with the weights by
        :func:`tractvq.models.checkpoint.save_model`.

    Attributes
    ----------
    config : ModelConfig
    encoder : nn.Module
        Groups ``(B, 3, S, P)`` to latents ``(B, D, h, w)`` (channels first).
    quantizer : tractvq.quantizers.Quantizer
        ``build(config.bottleneck, dim=config.latent_dim, codebook_size=config.codebook_size,
        **config.bottleneck_options)``.
    decoder : nn.Module
        Latents ``(B, D, h, w)`` to groups ``(B, 3, S, P)``.

    Raises
    ------
    ValueError
        If ``config`` is not a :class:`ModelConfig` or names a bottleneck option the quantizer
        does not take.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        encoder_class, decoder_class = _ARCHITECTURES[config.preset, config.layout]
        sizes = dict(
            channels=config.channels,
            hidden_channels=config.hidden_channels,
            residual_channels=config.residual_channels,
            residual_blocks=config.residual_blocks,
            latent_dim=config.latent_dim,
        )
        if config.layout == "streamline":
            sizes["n_points"] = config.grouping.n_points
        if config.preset == "basis":
            sizes["group_size"] = config.grouping.group_size
            if config.bottleneck == "fsq":  # a uniform quantizer of the coefficients
                sizes["levels"] = config.bottleneck_options.get("levels", (8, 5, 5, 5))
        self.encoder = encoder_class(**sizes)
        self.quantizer = build(
            config.bottleneck,
            dim=config.latent_dim,
            codebook_size=config.codebook_size,
            **config.bottleneck_options,
        )
        self.decoder = decoder_class(**sizes)

    # ----------------------------------------------------------------------------- shapes
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(3, S, P)`` of one group."""
        return self.config.input_shape

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape ``(h, w, D)`` of one group's latent grid (channels last)."""
        return self.config.latent_shape

    @property
    def discrete(self) -> bool:
        """Whether evaluation outputs are determined by the indices alone.

        True for codebook quantizers; false for continuous bottlenecks and for ``vqdiff``
        unless its ``eval_mode`` is ``"hard"`` (its soft output is a mixture of codes).
        """
        if not self.quantizer.discrete:
            return False
        return getattr(self.quantizer, "eval_mode", "hard") == "hard"

    @property
    def numbers_per_group(self) -> int:
        """Numbers that describe one group: ``h * w`` indices if :attr:`discrete`, else
        ``h * w * D`` floats."""
        h, w, dim = self.latent_shape
        return h * w if self.discrete else h * w * dim

    @property
    def bits_per_index(self) -> int:
        """Bits of one stored index, ``ceil(log2 K)``; 0 for continuous models."""
        if not self.discrete:
            return 0
        return max(1, math.ceil(math.log2(self.quantizer.codebook_size)))

    @property
    def bytes_per_group(self) -> int:
        """Storage of one group's latent: ``ceil(h * w * bits_per_index / 8)`` bytes if
        :attr:`discrete`, else ``h * w * D * 4`` (float32)."""
        h, w, dim = self.latent_shape
        if self.discrete:
            return math.ceil(h * w * self.bits_per_index / 8)
        return h * w * dim * 4

    def num_parameters(self, *, buffers: bool = False) -> int:
        """Number of parameters, plus floating-point buffers (e.g. EMA codebooks) if
        ``buffers``."""
        count = sum(parameter.numel() for parameter in self.parameters())
        if buffers:
            count += sum(buffer.numel() for buffer in self.buffers() if buffer.is_floating_point())
        return count

    def _check_groups(self, groups: Tensor) -> None:
        _check_shape("groups", groups, self.input_shape)
        if not groups.is_floating_point():
            raise ValueError(f"groups must be floating point, got {groups.dtype}")

    # ---------------------------------------------------------------------------- forward
    def encode(self, groups: Tensor) -> QuantizerOutput:
        """Quantized latents of groups.

        Parameters
        ----------
        groups : Tensor, shape (B, 3, S, P)
            Normalised groups (``S = config.grouping.group_size``,
            ``P = config.grouping.n_points``).

        Returns
        -------
        QuantizerOutput
            ``quantized`` ``(B, h, w, D)``, ``indices`` ``(B, h, w)`` or None, ``loss``,
            ``stats``.

        Raises
        ------
        ValueError
            If ``groups`` does not have the shape ``(B, 3, S, P)`` of the config.
        """
        self._check_groups(groups)
        latents = self.encoder(groups).permute(0, 2, 3, 1)  # (B, h, w, D)
        return self.quantizer(latents)

    def decode(self, quantized: Tensor) -> Tensor:
        """Groups from quantized latents.

        Parameters
        ----------
        quantized : Tensor, shape (B, h, w, D)

        Returns
        -------
        Tensor, shape (B, 3, S, P)

        Raises
        ------
        ValueError
            If ``quantized`` does not have the shape ``(B, h, w, D)`` of the config.
        """
        _check_shape("latents", quantized, self.latent_shape)
        return self.decoder(quantized.permute(0, 3, 1, 2))  # (B, 3, S, P)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Groups from code indices (the decoding of stored codes).

        Parameters
        ----------
        indices : Tensor of int64, shape (B, h, w)

        Returns
        -------
        Tensor, shape (B, 3, S, P)

        Raises
        ------
        ValueError
            If the bottleneck is continuous (it has no indices), or ``indices`` does not have
            the shape ``(B, h, w)`` or an integer dtype.
        """
        if not self.quantizer.discrete:
            raise ValueError(
                f"bottleneck {self.config.bottleneck!r} is continuous: it has no indices to decode"
            )
        _check_shape("indices", indices, self.latent_shape[:2])
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"indices must be integers, got {indices.dtype}")
        codes = self.quantizer.indices_to_codes(indices.long())  # (B, h, w, D)
        return self.decode(codes)

    def forward(self, groups: Tensor) -> ModelOutput:
        """Encode, quantize and decode groups ``(B, 3, S, P)``; see :meth:`encode`."""
        quantizer_output = self.encode(groups)
        reconstruction = self.decode(quantizer_output.quantized)  # (B, 3, S, P)
        return ModelOutput(reconstruction, quantizer_output)

    def loss(self, groups: Tensor, output: ModelOutput) -> tuple[Tensor, dict[str, float]]:
        """Training loss: mean squared reconstruction error plus the quantizer's loss.

        Parameters
        ----------
        groups : Tensor, shape (B, 3, S, P)
            The input of ``output``.
        output : ModelOutput
            ``self(groups)``.

        Returns
        -------
        loss : Tensor, scalar
        logs : dict of str to float
            ``loss``, ``reconstruction`` (MSE), ``quantizer_loss`` and the quantizer's stats.
        """
        reconstruction = F.mse_loss(output.reconstruction, groups)
        quantizer_loss = output.quantizer_output.loss
        total = reconstruction + quantizer_loss
        logs = {
            "loss": float(total.detach()),
            "reconstruction": float(reconstruction.detach()),
            "quantizer_loss": float(quantizer_loss.detach()),
        }
        logs.update({key: float(value) for key, value in output.quantizer_output.stats.items()})
        return total, logs

    def extra_repr(self) -> str:
        return f"preset={self.config.preset!r}, bottleneck={self.config.bottleneck!r}"


def _check_shape(what: str, value, expected: tuple[int, ...]) -> None:
    """Raise ValueError unless ``value`` is a Tensor of shape ``(B, *expected)``."""
    shape = f"(B, {', '.join(map(str, expected))})"
    if not isinstance(value, Tensor):
        raise ValueError(f"expected {what} of shape {shape}, got a {type(value).__name__}")
    if value.ndim != len(expected) + 1 or tuple(value.shape[1:]) != tuple(expected):
        raise ValueError(f"expected {what} of shape {shape}, got {tuple(value.shape)}")
