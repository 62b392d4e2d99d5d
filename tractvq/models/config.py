"""The one source of a model's hyperparameters: :class:`ModelConfig`.

A :class:`ModelConfig` says everything needed to rebuild a
:class:`~tractvq.models.autoencoder.BundleAutoencoder`: the architecture (``preset`` and its
sizes), the bottleneck (any name of the quantizer registry and its options) and the
preprocessing the model is trained with (:class:`~tractvq.bundles.GroupingSettings`). It is
stored as plain JSON-able data in every checkpoint (:meth:`ModelConfig.to_dict`), so a model
is rebuilt from its checkpoint alone (the nanoGPT ``model_args`` pattern).

Presets (:func:`preset_config`):

``paper``
    The published VQ-Diff architecture exactly (Lizarraga et al., arXiv 2311.06212; code
    github.com/drewrl3v/diff-vq-vae): two stride-2 convolutions to a 16 x 16 x 64 latent grid,
    K = 512 codes, and the published preprocessing :data:`~tractvq.bundles.PAPER_SETTINGS`.
``compact``
    Ours: one latent vector of 16 dims per streamline (the ``streamline`` layout, a 64 x 1 x 16
    latent: 1,024 numbers per group, 16 x fewer than ``paper``) and tractvq's own
    preprocessing (spatial groups, oriented, ordered, per-group normalisation).
``basis``
    Codes in linear bases fitted to the training cache (:mod:`tractvq.models.basis`): each
    group's mean streamline (64 coefficients, one per streamline slot) plus 15 coefficients of
    every streamline's difference from it, 1,024 numbers per group; an optional learned
    correction (``residual_blocks`` > 0). What generalises best to unseen subjects.
``compact-grid``
    The first ``compact`` (three stride-2 convolutions to an 8 x 8 x 16 latent grid, the same
    preprocessing): the quantizer studies of ``docs/results.md`` use it. Its configs say ``preset="compact", layout="grid"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from tractvq._config import check_integer, dataclass_from_dict
from tractvq.bundles import PAPER_SETTINGS, GroupingSettings

__all__ = ["PRESETS", "PRESET_NAMES", "ModelConfig", "preset_config"]

#: The architecture families a config can name (:attr:`ModelConfig.preset`).
PRESETS = ("paper", "compact", "basis")
#: Largest channel count, codebook size, latent size, group size and point count a config
#: may ask for (a checkpoint asking for more is refused before any model is built).
MAX_SIZE = 65_536
#: Most residual blocks per stack.
MAX_RESIDUAL_BLOCKS = 64


@dataclass(frozen=True)
class ModelConfig:
    """Every hyperparameter of a bundle autoencoder (defaults: the published VQ-Diff model).

    Parameters
    ----------
    preset : {"paper", "compact"}
        The encoder/decoder family (:mod:`tractvq.models.paper` or
        :mod:`tractvq.models.compact`).
    bottleneck : str
        A quantizer name of :func:`tractvq.quantizers.available` (``"identity"`` gives a plain
        autoencoder, ``"gaussian"`` a VAE, ``"vqdiff"`` VQ-Diff).
    bottleneck_options : dict
        Keyword options of that quantizer (e.g. ``{"temperature": 10.0}``); JSON-able values
        only (tuples are stored as lists).
    codebook_size : int
        Number of codes K (ignored by bottlenecks without a codebook, and by ``fsq``, whose
        size is the product of its levels).
    latent_dim : int
        Size D of each latent vector (channels of the latent grid).
    channels : tuple of int
        Output channels of the encoder's stages, in order; the decoder mirrors them. In the
        ``grid`` layout each stage is a stride-2 convolution that halves both axes of the
        group, so the latent grid is ``(S / 2**n, P / 2**n)`` with ``n = len(channels)``;
        ``paper`` takes exactly two (the published ``_conv_1`` and ``_conv_2``). In the
        ``streamline`` layout the first stage maps each whole streamline to ``channels[0]``
        features and the latent is ``(S, 1)``.
    layout : {"grid", "streamline"}
        How a group becomes a latent (:mod:`tractvq.models.compact`): a grid of patches of
        neighbouring streamlines and points (``paper``, and ``compact`` models trained before
        the streamline layout), or one latent vector per streamline (``compact`` only).
    hidden_channels : int
        Channels at the latent resolution (the residual stacks).
    residual_channels : int
        Bottleneck channels inside each residual block.
    residual_blocks : int
        Residual blocks in each of the encoder's and the decoder's stacks.
    grouping : GroupingSettings
        The preprocessing the model is trained with, applied by default when encoding and
        reconstructing tractograms; it also fixes the input shape ``(3, S, P)`` with
        ``S = grouping.group_size`` and ``P = grouping.n_points``.

    Raises
    ------
    ValueError
        If a value is invalid (the message names it), e.g. a group size that the stride-2
        convolutions cannot halve ``len(channels)`` times.
    """

    preset: str = "paper"
    bottleneck: str = "vqdiff"
    bottleneck_options: dict = field(default_factory=dict)
    codebook_size: int = 512  # K, published
    latent_dim: int = 64  # D, published embedding_dim
    channels: tuple[int, ...] = (64, 128)  # published num_hiddens // 2, num_hiddens
    layout: str = "grid"
    hidden_channels: int = 128  # published num_hiddens
    residual_channels: int = 32  # published num_residual_hiddens
    residual_blocks: int = 2  # published num_residual_layers
    grouping: GroupingSettings = PAPER_SETTINGS

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not isinstance(self.bottleneck, str):
            raise ValueError(f"bottleneck must be a quantizer name, got {self.bottleneck!r}")
        from tractvq.quantizers import available  # the registry imports torch: only when needed

        names = [name for name, _, _ in available()]
        if self.bottleneck not in names:
            raise ValueError(
                f"unknown bottleneck {self.bottleneck!r}; choose one of: {', '.join(names)}"
            )
        object.__setattr__(self, "bottleneck_options", _json_options(self.bottleneck_options))
        for name in ("codebook_size", "latent_dim", "hidden_channels", "residual_channels"):
            check_integer(name, getattr(self, name), minimum=2 if name == "codebook_size" else 1, maximum=MAX_SIZE)
        check_integer("residual_blocks", self.residual_blocks, minimum=0, maximum=MAX_RESIDUAL_BLOCKS)
        channels = self.channels
        if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
            raise ValueError(f"channels must be a sequence of positive integers, got {channels!r}")
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must hold at least one stride-2 stage, got ()")
        if len(channels) > 16:
            raise ValueError(f"channels may hold at most 16 stages, got {len(channels)}")
        for value in channels:
            check_integer("each of channels", value, minimum=1, maximum=MAX_SIZE)
        object.__setattr__(self, "channels", tuple(int(value) for value in channels))
        if self.preset == "paper" and len(channels) != 2:
            raise ValueError(
                "preset 'paper' has exactly two stride-2 convolutions (_conv_1, _conv_2);"
                f" channels must hold two values, got {channels!r}"
            )
        if self.layout not in ("grid", "streamline"):
            raise ValueError(f"layout must be 'grid' or 'streamline', got {self.layout!r}")
        if self.preset == "paper" and self.layout != "grid":
            raise ValueError(f"preset 'paper' has the grid layout; got layout={self.layout!r}")
        if self.preset == "basis" and self.layout != "streamline":
            raise ValueError(f"preset 'basis' has the streamline layout; got layout={self.layout!r}")
        if not isinstance(self.grouping, GroupingSettings):
            raise ValueError(f"grouping must be a GroupingSettings, got {self.grouping!r}")
        for name in ("group_size", "n_points"):
            check_integer(f"grouping.{name}", getattr(self.grouping, name), minimum=1, maximum=MAX_SIZE)
        factor = 2 ** len(channels)
        for name in ("group_size", "n_points") if self.layout == "grid" else ():
            size = getattr(self.grouping, name)
            if size % factor:
                raise ValueError(
                    f"grouping.{name} must be a multiple of {factor} (2 ** {len(channels)} stride-2"
                    f" stages), got {size}"
                )

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(3, S, P)`` of one group as the model takes it."""
        return (3, self.grouping.group_size, self.grouping.n_points)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape ``(h, w, D)`` of one group's latent grid (channels last)."""
        grouping = self.grouping
        if self.layout == "streamline":
            return (grouping.group_size, 1, self.latent_dim)
        factor = 2 ** len(self.channels)
        return (grouping.group_size // factor, grouping.n_points // factor, self.latent_dim)

    def to_dict(self) -> dict:
        """The config as JSON-able data (tuples as lists, ``grouping`` as a dict).

        ``ModelConfig.from_dict(config.to_dict()) == config`` always holds.
        """
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["bottleneck_options"] = json.loads(json.dumps(self.bottleneck_options))
        data["channels"] = list(self.channels)
        data["grouping"] = asdict(self.grouping)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict`'s output.

        Keys left out take their default; ``grouping`` keys left out take those of
        :class:`~tractvq.bundles.GroupingSettings`.

        Raises
        ------
        ValueError
            If ``data`` or its ``grouping`` is not a mapping, has a key that is no field, or a
            value is invalid.
        """
        return dataclass_from_dict(cls, data, name="model config", nested={"grouping": GroupingSettings})


def _json_options(options) -> dict:
    """``options`` as JSON data (tuples become lists), or a ValueError naming the problem."""
    if not isinstance(options, Mapping):
        raise ValueError(f"bottleneck_options must be a mapping, got {options!r}")
    for key in options:
        if not isinstance(key, str):
            raise ValueError(f"bottleneck_options keys must be strings, got {key!r}")
    try:
        return json.loads(json.dumps(dict(options), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"bottleneck_options must be JSON-able, got {options!r} ({error})"
        ) from None


# Presets: only the values that differ from the ModelConfig defaults (the published model).
_PRESETS: dict[str, dict] = {
    "paper": {},
    "compact": {
        "preset": "compact",
        "layout": "streamline",
        "latent_dim": 16,  # 64 streamlines x 16 = 1,024 numbers per group
        "channels": (256,),  # each streamline's 3 x 64 coordinates -> 256 features
        "hidden_channels": 128,
        "residual_channels": 64,
        "residual_blocks": 2,
        "grouping": GroupingSettings(),  # spatial, oriented, ordered, per-group normalised
    },
    "basis": {
        "preset": "basis",
        "layout": "streamline",
        "latent_dim": 16,  # 1 mean-streamline + 15 difference coefficients: 1,024 numbers per group
        "channels": (1,),  # unused: the bases replace the encoder's stages
        "hidden_channels": 256,  # width of the learned correction
        "residual_blocks": 0,  # no correction: the linear codec (what wins on held-out data)
        "bottleneck": "identity",
        "grouping": GroupingSettings(),
    },
    "compact-grid": {
        "preset": "compact",
        "layout": "grid",
        "latent_dim": 16,  # 8 x 8 x 16 = 1,024 numbers per group
        "channels": (32, 64, 128),  # three stride-2 stages: 64 x 64 -> 8 x 8
        "hidden_channels": 128,
        "residual_channels": 64,
        "residual_blocks": 2,
        "grouping": GroupingSettings(),
    },
}

#: The names :func:`preset_config` takes.
PRESET_NAMES = tuple(_PRESETS)


def preset_config(name: str, **overrides) -> ModelConfig:
    """The config of a preset, with some fields replaced.

    Parameters
    ----------
    name : {"paper", "compact", "compact-grid"}
        The preset.
    **overrides
        :class:`ModelConfig` fields to change, e.g. ``bottleneck="vq"``. ``grouping`` may be a
        :class:`~tractvq.bundles.GroupingSettings` or a dict of its fields.

    Returns
    -------
    ModelConfig

    Raises
    ------
    ValueError
        If ``name`` is not a preset (the message lists them), an override is not a field, or
        a value is invalid.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}")
    known = {item.name for item in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"ModelConfig has no field {', '.join(map(repr, unknown))}; the fields are:"
            f" {', '.join(sorted(known))}"
        )
    if "preset" in overrides and overrides["preset"] != _PRESETS[name].get("preset", "paper"):
        raise ValueError(f"preset_config({name!r}) cannot set preset={overrides['preset']!r}")
    if isinstance(overrides.get("grouping"), Mapping):
        overrides["grouping"] = dataclass_from_dict(GroupingSettings, overrides["grouping"], name="grouping")
    return replace(ModelConfig(**_PRESETS[name]), **overrides)
