"""tractvq's own encoder and decoder: a small latent, cheap on the CPU.

The ``compact`` preset. A group is laid out as an image ``(3, S streamlines, P points)``, as
in the published model (:mod:`tractvq.models.paper`), and becomes a latent in one of two
layouts (:attr:`~tractvq.models.config.ModelConfig.layout`):

``"streamline"`` (the preset; :class:`StreamlineEncoder`, :class:`StreamlineDecoder`)
    One latent vector per streamline. The first layer maps each whole streamline (its
    ``3 x P`` coordinates) to ``channels[0]`` features at once, the layers after it mix the
    features of neighbouring streamlines (convolutions of kernel 3 along the streamline axis,
    residual blocks), and a projection gives ``D`` latent dims per streamline: ``S x 1 x D`` =
    64 x 16 = 1,024 numbers per group, 16 x fewer than the published 16 x 16 x 64. The decoder
    mirrors it; its last layer maps each streamline's features back to its ``3 x P``
    coordinates. This layout follows the data: streamlines resampled to ``P`` points are
    smooth curves that few numbers each describe well (a linear basis of 16 per streamline
    already reconstructs the sample subject's held-out groups to 1.5 mm, see
    ``docs/models.md``), while a latent position of the grid layout must describe a patch of
    several streamlines with one vector.
``"grid"`` (:class:`CompactEncoder`, :class:`CompactDecoder`)
    Stride-2 convolutions (kernel 4) halve both axes ``len(channels)`` times, with few channels
    where the grid is large (32 at 32 x 32, 64 at 16 x 16, 128 at 8 x 8), then residual blocks
    at the latent resolution: an 8 x 8 x 16 latent grid (about 68 M multiply-adds per group).
    The first ``compact`` layout; models trained with it still load.

Residual blocks are plain ``x + conv1x1(relu(conv3(relu(x))))``, with a ``3 x 3`` convolution on
the grid and a kernel-3 convolution along the streamlines in the streamline layout.

Both rely on tractvq's preprocessing (the preset's :class:`~tractvq.bundles.GroupingSettings`
default): spatially coherent groups, streamlines oriented the same way and ordered so that
neighbouring rows of the image are neighbouring streamlines, each group centred and scaled.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CompactDecoder",
    "CompactEncoder",
    "Residual",
    "ResidualStack",
    "StreamlineDecoder",
    "StreamlineEncoder",
]


class Residual(nn.Module):
    """``x + conv1(relu(conv3(relu(x))))`` (the block of van den Oord et al., 2017).

    Parameters
    ----------
    channels : int
        Input and output channels.
    residual_channels : int
        Channels between the two convolutions.
    conv : {nn.Conv2d, nn.Conv1d}, optional
        The convolution: ``3 x 3`` then ``1 x 1`` on a grid ``(B, C, h, w)``, or kernel 3 then
        1 along a sequence ``(B, C, S)``.
    """

    def __init__(self, channels: int, residual_channels: int, conv: type[nn.Module] = nn.Conv2d):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            conv(channels, residual_channels, kernel_size=3, padding=1, bias=False),
            nn.ReLU(),
            conv(residual_channels, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)  # (B, C, h, w) or (B, C, S)


class ResidualStack(nn.Module):
    """``blocks`` :class:`Residual` blocks, then a ReLU."""

    def __init__(self, channels: int, residual_channels: int, blocks: int, conv: type[nn.Module] = nn.Conv2d):
        super().__init__()
        self.layers = nn.Sequential(
            *[Residual(channels, residual_channels, conv) for _ in range(blocks)]
        )

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


class StreamlineEncoder(nn.Module):
    """One latent vector per streamline: per-streamline layers, then mixing along the group.

    Parameters
    ----------
    channels : tuple of int
        Widths of the per-streamline layers; the first takes a streamline's ``3 x P``
        coordinates.
    hidden_channels : int
        Channels of the convolutions along the streamline axis and of the residual stack.
    residual_channels : int
        Inner channels of each residual block.
    residual_blocks : int
        Residual blocks.
    latent_dim : int
        Latent dims D per streamline.
    n_points : int
        Points P per streamline.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
        n_points: int,
    ):
        super().__init__()
        widths = (3 * n_points, *channels)
        self.stages = nn.ModuleList([nn.Linear(cin, cout) for cin, cout in zip(widths, widths[1:])])
        self.mix = nn.Conv1d(channels[-1], hidden_channels, kernel_size=3, padding=1)
        self.residual_stack = ResidualStack(hidden_channels, residual_channels, residual_blocks, nn.Conv1d)
        self.project = nn.Conv1d(hidden_channels, latent_dim, kernel_size=1)

    def forward(self, groups: Tensor) -> Tensor:
        """Latents ``(B, D, S, 1)`` (channels first) of groups ``(B, 3, S, P)``."""
        count, _, size, n_points = groups.shape
        x = groups.transpose(1, 2).reshape(count, size, 3 * n_points)  # (B, S, 3P): x..., y..., z...
        for stage in self.stages:
            x = F.relu(stage(x))  # (B, S, C_i)
        x = self.residual_stack(self.mix(x.transpose(1, 2)))  # (B, hidden, S)
        return self.project(x)[..., None]  # (B, D, S, 1)


class StreamlineDecoder(nn.Module):
    """The mirror of :class:`StreamlineEncoder`; same parameters."""

    def __init__(
        self,
        channels: tuple[int, ...],
        hidden_channels: int,
        residual_channels: int,
        residual_blocks: int,
        latent_dim: int,
        n_points: int,
    ):
        super().__init__()
        self.n_points = n_points
        self.project = nn.Conv1d(latent_dim, hidden_channels, kernel_size=3, padding=1)
        self.residual_stack = ResidualStack(hidden_channels, residual_channels, residual_blocks, nn.Conv1d)
        widths = (hidden_channels, *reversed(channels[:-1]), 3 * n_points)
        self.stages = nn.ModuleList([nn.Linear(cin, cout) for cin, cout in zip(widths, widths[1:])])

    def forward(self, latents: Tensor) -> Tensor:
        """Groups ``(B, 3, S, P)`` from latents ``(B, D, S, 1)``."""
        count, _, size, _ = latents.shape
        x = self.residual_stack(self.project(latents[..., 0])).transpose(1, 2)  # (B, S, hidden)
        for stage in self.stages[:-1]:
            x = F.relu(stage(x))  # (B, S, C_i)
        x = self.stages[-1](x)  # (B, S, 3P)
        return x.reshape(count, size, 3, self.n_points).transpose(1, 2)  # (B, 3, S, P)
