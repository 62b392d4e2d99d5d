"""The ``basis`` architecture: codes in linear bases fitted to the training streamlines.

Each 64-streamline group is coded as its **mean streamline**, in a basis of the training
groups' mean streamlines, plus every streamline's **difference from that mean**, in a basis of
the training streamlines' differences from their group means. Both bases are principal
components (SVD) of the training cache, fitted once by :func:`fit_bases` before training, so
every decoded streamline is a sum of smooth training modes: smooth by construction, and a
group of unrelated streamlines (sparse whole-brain input) costs nothing more than a coherent
bundle. The latent is the ``streamline`` layout's ``(S, 1, D)``: streamline ``s``'s vector
holds ``D - 1`` coefficients of its difference and the ``s``-th coefficient of the group's
mean (``S`` of them in all), every coefficient divided by a training scale so that
quantizers see unit-scale channels::

    groups (B, 3, S, P) -> streamlines v (B, S, 3P) -> mean m (B, 3P)
    latent[b, s] = [ <m - mu, G_s> / g_s,  <v_s - m_hat, R_1..R_{D-1}> / r ]    (B, S, D)
    decoded v_s  = m_hat + sum_k c_k r_k R_k  (+ correction),  m_hat = mu + sum_s a_s g_s G_s

Why: on subjects and bundle types a model never saw, a linear basis of the training
streamlines reconstructs better than nonlinear autoencoders trained on the same data, and the
group's mean is worth about a third of the error on coherent bundles (``docs/models.md``).
The decoder adds a learned correction of each streamline from its latent (linear, or an MLP
when ``residual_blocks`` > 0), its output layer zero-initialised, so an untrained model is
exactly the linear codec.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["BasisCodec", "BasisDecoder", "BasisEncoder", "UniformLevels", "fit_bases", "gain_latents", "ungain_latents"]


def _identity(rows: int, columns: int) -> Tensor:
    """``torch.eye(rows, columns)``, built so that on the ``meta`` device (a checkpoint's
    layout check) it does not import ``torch._dynamo``, which costs seconds per process."""
    identity = torch.zeros(rows, columns)
    identity.diagonal().fill_(1.0)
    return identity


class BasisCodec(nn.Module):
    """The fitted bases, shared by :class:`BasisEncoder` and :class:`BasisDecoder`.

    Parameters
    ----------
    group_size : int
        Streamlines S per group: the mean streamline gets S coefficients.
    n_points : int
        Points P per streamline.
    latent_dim : int
        Numbers D per streamline: ``D - 1`` coefficients of its difference from the mean.
    gain : bool, optional
        Code a per-group gain of the difference coefficients in place of the mean's last
        coefficient (for quantized latents, see :func:`gain_latents`).

    Attributes
    ----------
    mean : Tensor, shape (3P,)
        Mean training streamline ``mu`` (coordinates x..., y..., z...).
    group_basis : Tensor, shape (S, 3P)
        Orthonormal principal directions of the training groups' mean streamlines.
    group_std : Tensor, shape (S,)
        Scale of each mean-streamline coefficient (see :func:`fit_bases`).
    residual_basis : Tensor, shape (D - 1, 3P)
        Orthonormal principal directions of streamlines minus their group mean.
    residual_std : Tensor, shape (D - 1,)
        Standard deviation of each difference coefficient.
    """

    def __init__(self, group_size: int, n_points: int, latent_dim: int, *, gain: bool = False):
        super().__init__()
        self.gain = gain
        width = 3 * n_points
        if latent_dim < 2 or latent_dim - 1 > width or group_size > width:
            raise ValueError(
                f"the basis layout needs 2 <= latent_dim <= {width + 1} and group_size <= {width},"
                f" got latent_dim={latent_dim}, group_size={group_size}"
            )
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("group_basis", _identity(group_size, width))
        self.register_buffer("group_std", torch.ones(group_size))
        self.register_buffer("residual_basis", _identity(latent_dim - 1, width))
        self.register_buffer("residual_std", torch.ones(latent_dim - 1))

    def encode(self, streamlines: Tensor) -> Tensor:
        """Latents ``(B, S, D)`` of streamlines ``(B, S, 3P)``."""
        group_mean = streamlines.mean(dim=1)  # (B, 3P)
        group_coefficients = (group_mean - self.mean) @ self.group_basis.T / self.group_std  # (B, S)
        if self.gain:  # the last coefficient's slot carries the gain
            group_coefficients = torch.cat([group_coefficients[:, :-1], torch.zeros_like(group_coefficients[:, -1:])], 1)
        coded_mean = self.decode_mean(group_coefficients)  # (B, 3P)
        residual = streamlines - coded_mean[:, None]  # (B, S, 3P)
        residual_coefficients = residual @ self.residual_basis.T / self.residual_std  # (B, S, D - 1)
        return torch.cat([group_coefficients[..., None], residual_coefficients], dim=-1)

    def decode_mean(self, group_coefficients: Tensor) -> Tensor:
        """The coded mean streamline ``(B, 3P)`` from its coefficients ``(B, S)``."""
        return self.mean + (group_coefficients * self.group_std) @ self.group_basis

    def decode(self, latents: Tensor) -> Tensor:
        """Streamlines ``(B, S, 3P)`` from latents ``(B, S, D)``."""
        coded_mean = self.decode_mean(latents[..., 0])  # (B, 3P)
        return coded_mean[:, None] + (latents[..., 1:] * self.residual_std) @ self.residual_basis


def _streamlines(groups: Tensor) -> Tensor:
    """Groups ``(B, 3, S, P)`` as streamline vectors ``(B, S, 3P)`` (x..., y..., z...)."""
    count, _, size, n_points = groups.shape
    return groups.transpose(1, 2).reshape(count, size, 3 * n_points)


class UniformLevels(nn.Module):
    """Make FSQ (:class:`tractvq.quantizers.fsq.FSQ`) a uniform scalar quantizer of the
    coefficients, which a linear decoder needs.

    FSQ rounds ``bound(z) = tanh(z + shift) * half_l - offset``: a companding curve that a
    learned decoder undoes, but a basis does not. The encoder sends instead the ``z`` whose
    bound is the coefficient ``x`` in steps of ``delta`` (clipped to the levels),
    ``z = atanh((x / delta + offset) / half_l) - shift``, and the decoder reads FSQ's code
    ``c = round(bound(z)) / (L // 2)`` back as ``x_hat = c (L // 2) delta``. The step is the
    clipping range ``(1.2 + 0.52 ln L)`` standard deviations (close to the best uniform
    quantizer of a Gaussian for 3 to 64 levels) over ``L / 2``; coefficients are already in
    units of their training standard deviation.

    Parameters
    ----------
    levels : sequence of int
        FSQ's levels, one per latent dim.
    latent_dim : int
        D; must equal ``len(levels)`` (no projections around FSQ).
    """

    def __init__(self, levels, latent_dim: int):
        super().__init__()
        levels = torch.tensor([int(level) for level in levels], dtype=torch.float32)
        if len(levels) != latent_dim:
            raise ValueError(
                f"the basis preset takes one FSQ level per latent dim: {len(levels)} levels for latent_dim={latent_dim}"
            )
        half_l = (levels - 1) * (1 - 1e-3) / 2  # as FSQ computes them
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        self.register_buffer("delta", 2 * (1.2 + 0.52 * torch.log(levels)) / levels, persistent=False)
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("half_width", torch.div(levels, 2, rounding_mode="floor"), persistent=False)
        self.register_buffer("levels", levels, persistent=False)

    def precompensate(self, latents: Tensor) -> Tensor:
        """FSQ inputs ``(..., D)`` whose bound is ``latents / delta``, clipped to the levels."""
        margin = 1e-3 * self.half_l
        target = torch.clamp(latents / self.delta + self.offset, -self.half_l + margin, self.half_l - margin)
        return torch.atanh(target / self.half_l) - torch.atanh(self.offset / self.half_l)

    def decompand(self, codes: Tensor) -> Tensor:
        """Coefficients ``(..., D)`` from FSQ's codes ``(..., D)``."""
        return codes * self.half_width * self.delta

    def round(self, values: Tensor, channel: int) -> Tensor:
        """``values`` on channel ``channel``'s grid, as FSQ and :meth:`decompand` return them."""
        lowest, highest = -self.half_width[channel], self.levels[channel] - 1 - self.half_width[channel]
        return torch.clamp(torch.round(values / self.delta[channel]), lowest, highest) * self.delta[channel]


#: Smallest gain coded: groups with smaller differences are quantized as finely as this.
GAIN_FLOOR = 0.2


def gain_latents(latents: Tensor, uniform: UniformLevels) -> Tensor:
    """Divide each group's difference coefficients by their RMS (the gain), and code the
    gain's logarithm, on channel 0's grid, in the last streamline's channel 0.

    Groups unlike the training bundles (a subject's noisier streamlines, a sparse
    whole-brain group of unrelated streamlines) have differences many training deviations
    wide, which a fixed quantizer range clips; with the gain, every group's differences
    fill the range. Costs the mean streamline's last (least varying) coefficient.

    Parameters
    ----------
    latents : Tensor, shape (B, S, D)
        From :meth:`BasisCodec.encode` of a codec with ``gain=True``.
    uniform : UniformLevels

    Returns
    -------
    Tensor, shape (B, S, D)
    """
    rms = latents[..., 1:].pow(2).mean(dim=(1, 2)).sqrt()  # (B,)
    log_gain = uniform.round(torch.log(rms.clamp(min=GAIN_FLOOR)), 0)  # exactly what the decoder reads
    means = torch.cat([latents[:, :-1, 0], log_gain[:, None]], dim=1)  # (B, S)
    return torch.cat([means[..., None], latents[..., 1:] / log_gain.exp()[:, None, None]], dim=-1)


def ungain_latents(latents: Tensor) -> Tensor:
    """Inverse of :func:`gain_latents` on decoded coefficients ``(B, S, D)``."""
    gain = latents[:, -1, 0].exp()  # (B,)
    means = torch.cat([latents[:, :-1, 0], torch.zeros_like(gain)[:, None]], dim=1)  # (B, S)
    return torch.cat([means[..., None], latents[..., 1:] * gain[:, None, None]], dim=-1)


class BasisEncoder(nn.Module):
    """Groups ``(B, 3, S, P)`` to latents ``(B, D, S, 1)`` through the fitted bases.

    Parameters
    ----------
    latent_dim : int
        D.
    group_size, n_points : int
        S and P.
    """

    def __init__(self, latent_dim: int, group_size: int, n_points: int, levels=None, **_unused):
        super().__init__()
        self.uniform = None if levels is None else UniformLevels(levels, latent_dim)
        self.codec = BasisCodec(group_size, n_points, latent_dim, gain=self.uniform is not None)

    def forward(self, groups: Tensor) -> Tensor:
        """Latents ``(B, D, S, 1)`` (channels first) of groups ``(B, 3, S, P)``."""
        latents = self.codec.encode(_streamlines(groups))  # (B, S, D)
        if self.uniform is not None:
            latents = self.uniform.precompensate(gain_latents(latents, self.uniform))
        return latents.transpose(1, 2)[..., None]


class BasisDecoder(nn.Module):
    """Latents ``(B, D, S, 1)`` to groups ``(B, 3, S, P)``: the bases plus a learned
    per-streamline correction, zero at initialisation.

    Parameters
    ----------
    latent_dim : int
        D.
    group_size, n_points : int
        S and P.
    hidden_channels : int
        Width of the correction's hidden layers.
    residual_blocks : int
        Hidden layers of the correction (0: a linear correction ``Linear(D, 3P)``).
    """

    def __init__(
        self, latent_dim: int, group_size: int, n_points: int, hidden_channels: int, residual_blocks: int,
        levels=None, **_unused
    ):
        super().__init__()
        self.n_points = n_points
        self.uniform = None if levels is None else UniformLevels(levels, latent_dim)
        self.codec = BasisCodec(group_size, n_points, latent_dim, gain=self.uniform is not None)
        widths = (latent_dim, *[hidden_channels] * residual_blocks)
        layers = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Linear(cin, cout), nn.GELU()]
        layers.append(nn.Linear(widths[-1], 3 * n_points))
        nn.init.zeros_(layers[-1].weight)  # an untrained model is exactly the linear codec
        nn.init.zeros_(layers[-1].bias)
        self.correction = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        """Groups ``(B, 3, S, P)`` from latents ``(B, D, S, 1)``."""
        latents = latents[..., 0].transpose(1, 2)  # (B, S, D)
        if self.uniform is not None:
            latents = ungain_latents(self.uniform.decompand(latents))
        streamlines = self.codec.decode(latents) + self.correction(latents)  # (B, S, 3P)
        count, size, _ = streamlines.shape
        return streamlines.reshape(count, size, 3, self.n_points).transpose(1, 2)  # (B, 3, S, P)


def fit_bases(model: nn.Module, groups: np.ndarray, mask: np.ndarray) -> None:
    """Fit a ``basis`` model's bases to training groups, in place (encoder and decoder alike).

    Parameters
    ----------
    model : BundleAutoencoder
        With ``config.preset == "basis"``.
    groups : ndarray, shape (G, 3, S, P)
        Normalised training groups.
    mask : ndarray of bool, shape (G, S)
        Real (not repeated) streamlines; only those are fitted.

    Raises
    ------
    ValueError
        If there are fewer real streamlines or groups than basis directions.
    """
    codec = model.encoder.codec
    size, n_components = codec.group_basis.shape[0], codec.residual_basis.shape[0]
    streamlines = _streamlines(torch.as_tensor(groups, dtype=torch.float64)).numpy()  # (G, S, 3P)
    mask = np.asarray(mask, dtype=bool)
    if len(streamlines) < size or mask.sum() < n_components:
        raise ValueError(
            f"fitting the bases needs at least {size} groups and {n_components} streamlines,"
            f" got {len(streamlines)} and {int(mask.sum())}"
        )
    group_means = streamlines.mean(axis=1)  # (G, 3P), as the encoder takes it
    mean = group_means.mean(axis=0)
    group_basis, group_std = _principal_components(group_means - mean, size)
    # Each mean coefficient in units of sqrt(own std x first std): between equal relative and
    # equal absolute precision, so a quantizer with one level count for all of them spends its
    # steps where the mean varies most (measured at 288 bytes on unseen bundle types: 2.52 mm,
    # against 2.65 mm in units of its own std and 2.94 mm in units of the first std).
    group_std = np.sqrt(group_std * group_std[0])
    coded_means = mean + (group_means - mean) @ group_basis.T @ group_basis
    residual_basis, residual_std = _principal_components((streamlines - coded_means[:, None])[mask], n_components)
    fitted = {
        "mean": mean,
        "group_basis": group_basis,
        "group_std": group_std,
        "residual_basis": residual_basis,
        "residual_std": residual_std,
    }
    for codec in (model.encoder.codec, model.decoder.codec):
        for name, value in fitted.items():
            getattr(codec, name).copy_(torch.from_numpy(value))


def _principal_components(centred: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` principal directions ``(count, F)`` of rows ``centred`` and the
    standard deviations of the coefficients along them (at least 1e-6)."""
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
    # A deterministic sign: the largest entry of each direction is positive.
    signs = np.sign(directions[np.arange(len(directions)), np.abs(directions).argmax(axis=1)])
    directions = directions * signs[:, None]
    std = singular_values[:count] / np.sqrt(max(len(centred) - 1, 1))
    return directions[:count], np.maximum(std, 1e-6)
