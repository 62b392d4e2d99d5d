"""The published VQ-Diff encoder and decoder, layer for layer.

Lizarraga et al., "Differentiable VQ-VAE's for Robust White Matter Streamline Encodings"
(arXiv 2311.06212); code github.com/drewrl3v/diff-vq-vae, ``run_experiments/models.py`` (MIT),
itself the Sonnet-style VQ-VAE of van den Oord et al. (2017) with 2-D convolutions over a
group laid out as an image ``(3, 64 streamlines, 64 points)``:

- Encoder: Conv 3->64 (k4 s2 p1), ReLU, Conv 64->128 (k4 s2 p1), ReLU, Conv 128->128 (k3 p1),
  residual stack; then the pre-quantization Conv 128->64 (k1): a 16 x 16 x 64 latent grid.
- Decoder: Conv 64->128 (k3 p1), residual stack, ConvTranspose 128->64 (k4 s2 p1), ReLU,
  ConvTranspose 64->3 (k4 s2 p1), no output activation.
- Residual stack: blocks ``ReLU, Conv 128->32 (k3 p1, no bias), ReLU, Conv 32->128 (k1, no
  bias)`` added to their input, then a ReLU.

The attribute names are the published ones, so a published state-dict maps onto these
modules by a prefix rename (:func:`tractvq.models.checkpoint.import_published`):
``_encoder.X -> encoder.X``, ``_pre_vq_conv.X -> encoder._pre_vq_conv.X`` and
``_decoder.X -> decoder.X``.

Decisions
---------
- The published residual block starts with an *in-place* ``nn.ReLU(True)`` and returns
  ``x + self._block(x)``; the in-place ReLU rewrites ``x`` before the addition reads it, so the
  published model computes ``relu(x) + F(x)``, not ``x + F(x)``. We compute exactly that (with
  an out-of-place ReLU), so imported weights give the published outputs.
- The widths are :class:`~tractvq.models.config.ModelConfig` fields (published values by
  default): ``channels = (64, 128)``, ``hidden_channels = 128``, ``residual_channels = 32``,
  ``residual_blocks = 2``, ``latent_dim = 64``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PaperDecoder", "PaperEncoder", "PaperResidual", "PaperResidualStack"]


class PaperResidual(nn.Module):
    """One published residual block: ``relu(x) + conv1x1(relu(conv3x3(relu(x))))``.

    Parameters
    ----------
    channels : int
        Input and output channels.
    residual_channels : int
        Channels between the two convolutions.
    """

    def __init__(self, channels: int, residual_channels: int):
        super().__init__()
        self._block = nn.Sequential(  # indices 1 and 3 hold the published weights
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(residual_channels, channels, kernel_size=1, stride=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # The published in-place ReLU makes the skip connection carry relu(x) (module docstring).
        return F.relu(x) + self._block(x)  # (B, C, h, w)


class PaperResidualStack(nn.Module):
    """``blocks`` :class:`PaperResidual` blocks, then a ReLU."""

    def __init__(self, channels: int, residual_channels: int, blocks: int):
        super().__init__()
        self._layers = nn.ModuleList(
            [PaperResidual(channels, residual_channels) for _ in range(blocks)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self._layers:
            x = layer(x)
        return F.relu(x)


class PaperEncoder(nn.Module):
    """The published encoder and pre-quantization convolution.

    Parameters
    ----------
    channels : (int, int)
        Outputs of the two stride-2 convolutions (published 64, 128).
    hidden_channels : int
        Channels of the residual stack (published 128).
    residual_channels : int
        Inner channels of each residual block (published 32).
    residual_blocks : int
        Residual blocks (published 2).
    latent_dim : int
        Latent channels D (published 64).
    """

    def __init__(
        self,
        channels: tuple[int, int],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
    ):
        super().__init__()
        first, second = channels
        self._conv_1 = nn.Conv2d(3, first, kernel_size=4, stride=2, padding=1)
        self._conv_2 = nn.Conv2d(first, second, kernel_size=4, stride=2, padding=1)
        self._conv_3 = nn.Conv2d(second, hidden_channels, kernel_size=3, stride=1, padding=1)
        self._residual_stack = PaperResidualStack(
            hidden_channels, residual_channels, residual_blocks
        )
        self._pre_vq_conv = nn.Conv2d(hidden_channels, latent_dim, kernel_size=1, stride=1)

    def forward(self, groups: Tensor) -> Tensor:
        """Latent grid ``(B, D, S/4, P/4)`` (channels first) of groups ``(B, 3, S, P)``."""
        x = F.relu(self._conv_1(groups))  # (B, 64, S/2, P/2)
        x = F.relu(self._conv_2(x))  # (B, 128, S/4, P/4)
        x = self._residual_stack(self._conv_3(x))  # (B, 128, S/4, P/4)
        return self._pre_vq_conv(x)  # (B, D, S/4, P/4)


class PaperDecoder(nn.Module):
    """The published decoder; parameters as :class:`PaperEncoder`."""

    def __init__(
        self,
        channels: tuple[int, int],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
    ):
        super().__init__()
        first, _ = channels
        self._conv_1 = nn.Conv2d(latent_dim, hidden_channels, kernel_size=3, stride=1, padding=1)
        self._residual_stack = PaperResidualStack(
            hidden_channels, residual_channels, residual_blocks
        )
        self._conv_trans_1 = nn.ConvTranspose2d(
            hidden_channels, first, kernel_size=4, stride=2, padding=1
        )
        self._conv_trans_2 = nn.ConvTranspose2d(first, 3, kernel_size=4, stride=2, padding=1)

    def forward(self, latents: Tensor) -> Tensor:
        """Groups ``(B, 3, 4h, 4w)`` from a latent grid ``(B, D, h, w)`` (channels first)."""
        x = self._residual_stack(self._conv_1(latents))  # (B, 128, h, w)
        x = F.relu(self._conv_trans_1(x))  # (B, 64, 2h, 2w)
        return self._conv_trans_2(x)  # (B, 3, 4h, 4w)
