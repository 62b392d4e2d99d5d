"""Model and training checkpoints: safe to load, complete enough to rebuild the model.

A model checkpoint (:func:`save_model`) is a ``torch.save`` of plain data::

    {"format": "tractvq-model", "format_version": 1, "tractvq_version": "0.1.0",
     "config": ModelConfig.to_dict(), "state_dict": {name: Tensor}, "extra": {...},
     "weights_sha256": "..."}

so :func:`load_model` rebuilds the model from the file alone. Before anything is built, the
config's model size is checked (on PyTorch's ``meta`` device, no memory used) against
:data:`MAX_PARAMETERS`, and the weights against the model (dense, finite, right shapes) and
against their SHA-256 (files written before it was recorded load without it). Every checkpoint is read with
``torch.load(..., weights_only=True)`` and nothing else: a file carrying pickled Python
objects (which an ordinary ``torch.load`` would *run*) is refused with a
:class:`~tractvq.errors.ModelError` before any of it executes.

:func:`import_published` converts the state-dicts published with the VQ-Diff paper
(github.com/drewrl3v/diff-vq-vae) into tractvq model checkpoints of the ``paper`` preset.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from tractvq._version import __version__
from tractvq.errors import ModelError
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.config import ModelConfig, preset_config
from tractvq.outputs import atomic_output, check_output

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "PUBLISHED_KINDS",
    "build_model",
    "checked_config",
    "expected_layout",
    "import_published",
    "layout_problems",
    "load_checkpoint",
    "load_model",
    "model_fingerprint",
    "published_layout",
    "save_checkpoint",
    "save_model",
]

MODEL_FORMAT = "tractvq-model"
MODEL_FORMAT_VERSION = 1
#: Most parameters and buffers of a model built from a checkpoint's config (1 GiB of float32).
MAX_PARAMETERS = 1 << 28

#: Published model kind -> tractvq bottleneck (the quantizer defaults are the published ones).
PUBLISHED_KINDS = {"ae": "identity", "vq": "vq", "vq-ema": "vq-ema", "vqdiff": "vqdiff"}


# -------------------------------------------------------------------------------- reading
def _read(path: str | os.PathLike) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``, every failure a ModelError."""
    path = Path(path)
    if not path.exists():
        raise ModelError(path, "does not exist")
    if not path.is_file():
        raise ModelError(path, "is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": the error says more
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickler_detail(str(error))
        if detail.startswith("Unsupported global"):
            name = detail.split("GLOBAL", 1)[-1].strip() or detail
            raise ModelError(
                path, f"refused to unpickle {name}: not a plain tensor checkpoint (nothing in it was run)"
            ) from None
        raise ModelError(path, f"is not a PyTorch checkpoint ({detail})") from None
    except EOFError:
        raise ModelError(path, "is empty or truncated: not a PyTorch checkpoint") from None
    except Exception as error:  # zip errors (RuntimeError), OSError, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelError(
            path, f"cannot be read as a PyTorch checkpoint ({type(error).__name__}: {first_line})"
        ) from None


def _unpickler_detail(message: str) -> str:
    """The useful line of torch's weights-only refusal, e.g. ``Unsupported global: GLOBAL
    io.open ...``."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        rest = message.split(marker, 1)[1]
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        if lines:
            line = lines[0]
            return line.split(" was not an allowed global")[0]
    first = message.strip().splitlines()[0] if message.strip() else ""
    return "unreadable pickle" if not first or "weights_only" in first else first


# -------------------------------------------------------------------------------- writing
_SCALARS = (bool, int, float, str, type(None))


def _check_storable(value, where: str = "payload") -> None:
    """Raise ValueError unless ``value`` is made of what ``weights_only`` loading accepts."""
    if isinstance(value, Tensor) or type(value) in _SCALARS:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise ValueError(f"{where}: keys must be str or int, got {key!r}")
            _check_storable(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]")
        return
    raise ValueError(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a"
        " safe checkpoint; use tensors, dicts, lists, tuples, numbers, strings, bools or None"
    )


def save_checkpoint(payload: dict, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a training checkpoint that :func:`load_checkpoint` reads safely.

    Parameters
    ----------
    payload : dict
        Tensors, dicts, lists, tuples, ints, floats, bools, strings and None, nested (model
        and optimizer state-dicts, step, RNG states as uint8 tensors, ...).
    path : str or os.PathLike
        Output file (written atomically).
    force : bool, optional
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``payload`` holds anything else (the message names where), before writing.
    OutputError
        If ``path`` exists and ``force`` is false, or its folder is missing.
    """
    if type(payload) not in (dict, OrderedDict):
        raise ValueError(f"payload must be a dict, got {type(payload).__name__}")
    _check_storable(payload)
    with atomic_output(path, force=force) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (or :func:`save_model`).

    Only ``torch.load(..., weights_only=True)``: pickled Python objects are refused.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        Tensors on the CPU.

    Raises
    ------
    ModelError
        If the file is missing, unreadable, not a PyTorch checkpoint, holds pickled objects
        or does not hold a dict.
    """
    payload = _read(path)
    if not isinstance(payload, dict):
        raise ModelError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


# --------------------------------------------------------------------------------- models
def _state_dict(model: BundleAutoencoder) -> dict[str, Tensor]:
    return {key: value.detach().cpu() for key, value in model.state_dict().items()}


def save_model(
    model: BundleAutoencoder,
    path: str | os.PathLike,
    *,
    force: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write a model checkpoint: config, weights and free-form ``extra`` data.

    Parameters
    ----------
    model : BundleAutoencoder
    path : str or os.PathLike
        Output file (written atomically).
    force : bool, optional
        Replace an existing file.
    extra : dict, optional
        Anything to keep with the model (training step, metrics, provenance), made of the
        types :func:`save_checkpoint` accepts.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``model`` is not a BundleAutoencoder or ``extra`` holds something unsafe to store.
    OutputError
        If ``path`` exists and ``force`` is false, or its folder is missing.
    """
    if not isinstance(model, BundleAutoencoder):
        raise ValueError(f"model must be a BundleAutoencoder, got {type(model).__name__}")
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "tractvq_version": __version__,
        "config": model.config.to_dict(),
        "state_dict": _state_dict(model),
        "extra": {} if extra is None else extra,
    }
    payload["weights_sha256"] = _weights_digest(payload["state_dict"])
    return save_checkpoint(payload, path, force=force)


def load_model(path: str | os.PathLike, *, return_extra: bool = False):
    """Rebuild a model from its checkpoint alone.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model`.
    return_extra : bool, optional
        Also return the checkpoint's ``extra`` dict.

    Returns
    -------
    BundleAutoencoder or (BundleAutoencoder, dict)
        In evaluation mode (call ``.train()`` to train on). Building it does not consume
        torch's global random numbers.

    Raises
    ------
    ModelError
        If the file is missing or unreadable, holds pickled objects, is not a tractvq model
        checkpoint (or a newer format), has an invalid or oversized config, its weights do not
        fit the model of its config (the message lists the missing, unexpected, mis-shaped,
        sparse and non-finite ones) or do not match their recorded checksum.
    """
    payload = load_checkpoint(path)
    if payload.get("format") != MODEL_FORMAT:
        raise ModelError(
            path,
            f"is not a tractvq model checkpoint (format {payload.get('format')!r},"
            f" expected {MODEL_FORMAT!r})",
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= MODEL_FORMAT_VERSION:
        raise ModelError(
            path,
            f"has format_version {version!r}; this tractvq ({__version__}) reads up to"
            f" {MODEL_FORMAT_VERSION}: update tractvq",
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ModelError(path, f"has no {key!r} dict")
    config = checked_config(path, payload["config"], payload["state_dict"])
    recorded = payload.get("weights_sha256")
    if recorded is not None and recorded != _weights_digest(payload["state_dict"]):
        raise ModelError(path, "weights checksum does not match: the file is damaged")
    model = build_model(config, path)
    _load_weights(path, model, payload["state_dict"])
    model.eval()
    if return_extra:
        return model, payload.get("extra", {})
    return model


def checked_config(path: str | os.PathLike, config: dict, state_dict: dict) -> ModelConfig:
    """The model config of a checkpoint, checked, and checked against its weights.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint, for messages.
    config : dict
        Its :meth:`ModelConfig.to_dict` data.
    state_dict : dict
        Its weights.

    Returns
    -------
    ModelConfig

    Raises
    ------
    ModelError
        If the config is invalid or the weights do not fit the model it describes (nothing
        is built to find out).
    """
    try:
        model_config = ModelConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        raise ModelError(path, f"has an invalid model config: {error}") from None
    problems = layout_problems(state_dict, expected_layout(model_config, path))
    if problems:
        raise ModelError(path, f"does not fit the model of its config: {problems}")
    return model_config


def expected_layout(config: ModelConfig, path: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Name -> shape of the state-dict of the model ``config`` describes, found without
    allocating it (PyTorch's ``meta`` device).

    Raises
    ------
    ModelError
        Naming ``path``, if the model cannot be built or has more than
        :data:`MAX_PARAMETERS` parameters and buffers.
    """
    try:
        with torch.device("meta"):
            model = BundleAutoencoder(config)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelError(path, f"has a model config that cannot be built: {error}") from None
    state = model.state_dict()
    size = sum(value.numel() for value in state.values())
    if size > MAX_PARAMETERS:
        raise ModelError(path, f"describes a model of {size:,} numbers, more than tractvq builds ({MAX_PARAMETERS:,})")
    return {key: tuple(value.shape) for key, value in state.items()}


def build_model(config: ModelConfig, path: str | os.PathLike | None = None) -> BundleAutoencoder:
    """The model of ``config``, once its size is checked (:func:`expected_layout`); it does
    not consume torch's global random numbers.

    Raises
    ------
    ModelError
        Naming ``path``, if the model cannot be built or is too large.
    """
    expected_layout(config, path)
    try:
        with torch.random.fork_rng(devices=[]):
            return BundleAutoencoder(config)
    except (TypeError, ValueError) as error:
        raise ModelError(path, f"has a model config that cannot be built: {error}") from None


def _weights_digest(state_dict: Mapping) -> str:
    """SHA-256 of each entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_weights(path, model: BundleAutoencoder, state_dict: Mapping) -> None:
    """``model.load_state_dict(state_dict)`` after a strict key and shape check."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = layout_problems(state_dict, expected)
    if problems:
        raise ModelError(path, f"does not fit the model of its config: {problems}")
    model.load_state_dict(state_dict, strict=True)


def layout_problems(
    state_dict: Mapping, expected: Mapping[str, tuple], *, floating: bool = False
) -> str:
    """One sentence listing missing, unexpected, non-tensor, sparse, mis-shaped and non-finite
    keys ("" if none); with ``floating``, also tensors that are not floating point."""
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = []
    for key, shape in expected.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        if not isinstance(value, Tensor):
            wrong.append(f"{key} (a {type(value).__name__}, not a tensor)")
        elif value.layout != torch.strided:
            wrong.append(f"{key} ({value.layout}, expected a dense tensor)")
        elif tuple(value.shape) != shape:
            wrong.append(f"{key} (shape {tuple(value.shape)}, expected {shape})")
        elif floating and not value.is_floating_point():
            wrong.append(f"{key} (dtype {value.dtype}, expected floating point)")
        elif value.is_floating_point() and not torch.isfinite(value).all():
            wrong.append(f"{key} (non-finite values)")
    parts = []
    if missing:
        parts.append(f"missing key(s): {', '.join(missing)}")
    if unexpected:
        parts.append(f"unexpected key(s): {', '.join(map(str, unexpected))}")
    if wrong:
        parts.append(f"wrong shape or type: {', '.join(wrong)}")
    return "; ".join(parts)


def model_fingerprint(model: BundleAutoencoder) -> str:
    """A short identity of a model: its config and every weight, byte for byte.

    Parameters
    ----------
    model : BundleAutoencoder

    Returns
    -------
    str
        The first 16 hex digits of the SHA-256 of the config's JSON (sorted keys) and of
        each state-dict entry's name, dtype, shape and bytes, in name order.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    state = _state_dict(model)
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------- published models
def published_layout(kind: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state-dict published with VQ-Diff (github.com/drewrl3v/diff-vq-vae).

    Parameters
    ----------
    kind : {"ae", "vq", "vq-ema", "vqdiff"}

    Returns
    -------
    dict of str to tuple of int

    Raises
    ------
    ValueError
        If ``kind`` is unknown (the message lists the kinds).
    """
    if kind not in PUBLISHED_KINDS:
        raise ValueError(
            f"unknown published model kind {kind!r}; choose one of: {', '.join(PUBLISHED_KINDS)}"
        )
    layout = {
        "_encoder._conv_1.weight": (64, 3, 4, 4),
        "_encoder._conv_1.bias": (64,),
        "_encoder._conv_2.weight": (128, 64, 4, 4),
        "_encoder._conv_2.bias": (128,),
        "_encoder._conv_3.weight": (128, 128, 3, 3),
        "_encoder._conv_3.bias": (128,),
    }
    for block in (0, 1):
        layout[f"_encoder._residual_stack._layers.{block}._block.1.weight"] = (32, 128, 3, 3)
        layout[f"_encoder._residual_stack._layers.{block}._block.3.weight"] = (128, 32, 1, 1)
    layout["_pre_vq_conv.weight"] = (64, 128, 1, 1)
    layout["_pre_vq_conv.bias"] = (64,)
    if kind != "ae":
        layout["_vq_vae._embedding.weight"] = (512, 64)
    if kind == "vq-ema":
        layout["_vq_vae._ema_w"] = (512, 64)
        layout["_vq_vae._ema_cluster_size"] = (512,)
    layout["_decoder._conv_1.weight"] = (128, 64, 3, 3)
    layout["_decoder._conv_1.bias"] = (128,)
    for block in (0, 1):
        layout[f"_decoder._residual_stack._layers.{block}._block.1.weight"] = (32, 128, 3, 3)
        layout[f"_decoder._residual_stack._layers.{block}._block.3.weight"] = (128, 32, 1, 1)
    layout["_decoder._conv_trans_1.weight"] = (128, 64, 4, 4)
    layout["_decoder._conv_trans_1.bias"] = (64,)
    layout["_decoder._conv_trans_2.weight"] = (64, 3, 4, 4)
    layout["_decoder._conv_trans_2.bias"] = (3,)
    return layout


# Published quantizer keys -> ours (tractvq.quantizers.vq / ema / vqdiff: ``codebook``).
_QUANTIZER_KEYS = {
    "_vq_vae._embedding.weight": "quantizer.codebook.weight",
    "_vq_vae._ema_w": "quantizer.codebook.embedding_sum",
    "_vq_vae._ema_cluster_size": "quantizer.codebook.cluster_size",
}
# Published module prefixes -> ours (tractvq.models.paper keeps the published names).
_PREFIXES = (
    ("_encoder.", "encoder."),
    ("_pre_vq_conv.", "encoder._pre_vq_conv."),
    ("_decoder.", "decoder."),
)


def _tractvq_key(published_key: str) -> str:
    if published_key in _QUANTIZER_KEYS:
        return _QUANTIZER_KEYS[published_key]
    for prefix, ours in _PREFIXES:
        if published_key.startswith(prefix):
            return ours + published_key[len(prefix):]
    raise KeyError(published_key)  # unreachable after the layout check


def import_published(
    state_dict_path: str | os.PathLike,
    kind: str,
    *,
    path_out: str | os.PathLike | None = None,
    force: bool = False,
) -> BundleAutoencoder:
    """Convert a state-dict published with VQ-Diff into a tractvq ``paper`` model.

    The published repository (github.com/drewrl3v/diff-vq-vae, ``run_experiments/``) saves
    ``model.state_dict()`` of its ``AllModels`` class; its key names and shapes are
    :func:`published_layout`. The weights are renamed onto :mod:`tractvq.models.paper`
    (``_encoder.X -> encoder.X``, ``_pre_vq_conv.X -> encoder._pre_vq_conv.X``,
    ``_decoder.X -> decoder.X``, ``_vq_vae._embedding.weight -> quantizer.codebook.weight``,
    ``_vq_vae._ema_w -> quantizer.codebook.embedding_sum``,
    ``_vq_vae._ema_cluster_size -> quantizer.codebook.cluster_size``).

    The model's config records the published preprocessing,
    :data:`~tractvq.bundles.PAPER_SETTINGS`: groups of 64 consecutive streamlines in file
    order, no re-orientation or re-ordering, 64 points, ``global`` min-max normalisation to
    [-1, 1]. The published minimum and maximum were **not published**, so the config leaves
    them unset (``minimum=None``, ``maximum=None``): give them when encoding (for the
    shipped sample data they are -100 and 100 mm, see ``data/README.md``); fitting them to
    the data being encoded is only an approximation of the published scaling.

    Parameters
    ----------
    state_dict_path : str or os.PathLike
        The published ``.pt`` / ``.pth`` file (a state-dict; a pickled whole model is refused).
    kind : {"ae", "vq", "vq-ema", "vqdiff"}
        Which published model: bottleneck ``identity``, ``vq``, ``vq-ema`` or ``vqdiff``, each
        with its published options (tractvq's defaults).
    path_out : str or os.PathLike, optional
        Also write the model there (:func:`save_model`), with the source file name, its
        SHA-256 and ``kind`` in ``extra``.
    force : bool, optional
        Replace an existing ``path_out``.

    Returns
    -------
    BundleAutoencoder
        In evaluation mode.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    ModelError
        If the file cannot be read safely, is not a state-dict, or its keys and shapes are
        not exactly the published ones (missing, unexpected and mis-shaped keys are listed
        together).
    OutputError
        If ``path_out`` exists and ``force`` is false (checked before anything is read).

    Notes
    -----
    The published VQ-VAE-EMA stores Laplace-smoothed cluster sizes in
    ``_ema_cluster_size``; tractvq's EMA codebook keeps unsmoothed ones. The codes
    (``_embedding.weight``) are taken as published, so the imported model encodes and decodes
    exactly as published; only further EMA training steps differ negligibly (by about
    ``eps = 1e-5`` per code).
    """
    layout = published_layout(kind)
    if path_out is not None:
        check_output(path_out, force=force)
    state_dict = _read(state_dict_path)
    if not isinstance(state_dict, Mapping):
        raise ModelError(
            state_dict_path,
            f"holds a {type(state_dict).__name__}, not a state-dict (a dict of tensors)",
        )
    problems = layout_problems(state_dict, layout, floating=True)
    if problems:
        raise ModelError(
            state_dict_path, f"is not a published VQ-Diff {kind!r} state-dict: {problems}"
        )
    config = preset_config("paper", bottleneck=PUBLISHED_KINDS[kind])
    with torch.random.fork_rng(devices=[]):
        model = BundleAutoencoder(config)
    renamed = {_tractvq_key(key): value.to(torch.float32) for key, value in state_dict.items()}
    _load_weights(state_dict_path, model, renamed)
    model.eval()
    if path_out is not None:
        source = Path(state_dict_path)
        extra = {
            "imported_from": source.name,
            "imported_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "published_kind": kind,
        }
        save_model(model, path_out, force=force, extra=extra)
    return model
