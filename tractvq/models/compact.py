"""tractvq's own encoder and decoder: a small latent, cheap on the CPU.

The ``compact`` preset. The same family as the published model (:mod:`tractvq.models.paper`:
stride-2 convolutions over a group laid out as an image ``(3, S streamlines, P points)``,
residual blocks at the latent resolution, transposed convolutions back), changed where it
costs time or latent size:

- Three stride-2 convolutions instead of two, with few channels where the grid is large
  (32 at 32 x 32, 64 at 16 x 16, 128 at 8 x 8): the latent grid is 8 x 8, and the work is
  done at the resolution where it is cheap (about 68 M multiply-adds per group against the
  published 174 M).
- A latent of 16 dims per position: 8 x 8 x 16 = 1,024 numbers per group, 16 x fewer than the
  published 16 x 16 x 64 (and fewer than the group's 12,288 coordinates). With a discrete
  bottleneck a group is 64 indices.
- Plain residual blocks ``x + conv1x1(relu(conv3x3(relu(x))))``, with more inner channels
  than published (64 instead of 32), since they run on 64 positions only.

It relies on tractvq's preprocessing (the preset's :class:`~tractvq.bundles.GroupingSettings`
default): spatially coherent groups, streamlines oriented the same way and ordered so that
neighbouring rows of the image are neighbouring streamlines, each group centred and scaled.
That makes a group a smooth image along both axes, which a small latent grid can hold.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Residual", "ResidualStack", "CompactEncoder", "CompactDecoder"]


class Residual(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` (the block of van den Oord et al., 2017).

    Parameters
    ----------
    channels : int
        Input and output channels.
    residual_channels : int
        Channels between the two convolutions.
    """

    def __init__(self, channels: int, residual_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, kernel_size=3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(residual_channels, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)  # (B, C, h, w)


class ResidualStack(nn.Module):
    """``blocks`` :class:`Residual` blocks, then a ReLU."""

    def __init__(self, channels: int, residual_channels: int, blocks: int):
        super().__init__()
        self.layers = nn.Sequential(*[Residual(channels, residual_channels) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.layers(x))


class CompactEncoder(nn.Module):
    """Stride-2 convolutions, a residual stack, a 1 x 1 projection to the latent dims.

    Parameters
    ----------
    channels : tuple of int
        Outputs of the stride-2 convolutions (each halves both axes).
    hidden_channels : int
        Channels of the residual stack.
    residual_channels : int
        Inner channels of each residual block.
    residual_blocks : int
        Residual blocks.
    latent_dim : int
        Latent channels D.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
    ):
        super().__init__()
        inputs = (3, *channels[:-1])
        self.stages = nn.ModuleList(
            [
                nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)
                for cin, cout in zip(inputs, channels)
            ]
        )
        self.mix = nn.Conv2d(channels[-1], hidden_channels, kernel_size=3, padding=1)
        self.residual_stack = ResidualStack(hidden_channels, residual_channels, residual_blocks)
        self.project = nn.Conv2d(hidden_channels, latent_dim, kernel_size=1)

    def forward(self, groups: Tensor) -> Tensor:
        """Latent grid ``(B, D, S/2**n, P/2**n)`` (channels first) of groups ``(B, 3, S, P)``."""
        x = groups
        for stage in self.stages:
            x = F.relu(stage(x))  # (B, C_i, S/2**i, P/2**i)
        x = self.residual_stack(self.mix(x))  # (B, hidden, h, w)
        return self.project(x)  # (B, D, h, w)


class CompactDecoder(nn.Module):
    """The mirror of :class:`CompactEncoder`; same parameters."""

    def __init__(
        self,
        channels: tuple[int, ...],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
    ):
        super().__init__()
        self.project = nn.Conv2d(latent_dim, hidden_channels, kernel_size=3, padding=1)
        self.residual_stack = ResidualStack(hidden_channels, residual_channels, residual_blocks)
        outputs = (*reversed(channels[:-1]), 3)
        inputs = (hidden_channels, *outputs[:-1])
        self.stages = nn.ModuleList(
            [
                nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)
                for cin, cout in zip(inputs, outputs)
            ]
        )

    def forward(self, latents: Tensor) -> Tensor:
        """Groups ``(B, 3, 2**n h, 2**n w)`` from a latent grid ``(B, D, h, w)``."""
        x = self.residual_stack(self.project(latents))  # (B, hidden, h, w)
        for stage in self.stages[:-1]:
            x = F.relu(stage(x))  # (B, C_i, 2h, 2w) ...
        return self.stages[-1](x)  # (B, 3, S, P)
