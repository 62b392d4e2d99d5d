"""Options shared by several commands, and the types that check option values at parse time.

Every numeric or choice option is checked by its click type (or callback) before a command
runs, so a bad value is a usage error (exit status 2) that names the option and the value,
and nothing is read, built or written. Nothing here imports torch or DIPY at import time:
``tractvq --help`` stays instant.
"""

from __future__ import annotations

import json
import math

import click

#: Codes K of a codebook.
CODEBOOK_SIZE = click.IntRange(2, 65536)
#: Channels of a layer, and dims of a latent vector.
CHANNELS = click.IntRange(1, 4096)
#: Steps, batch sizes and other counts of at least one.
COUNT = click.IntRange(min=1)
#: CPU threads or worker processes.
PROCESSES = click.IntRange(1, 1024)
#: Seeds of the random generators (NumPy's and torch's both take these).
SEED = click.IntRange(0, 2**32 - 1)


class FiniteFloat(click.FloatRange):
    """A finite number, optionally within bounds (:class:`click.FloatRange` lets nan and inf through).

    Parameters
    ----------
    min, max : float, optional
        Bounds (none by default).
    min_open, max_open : bool, optional
        Exclude the bound itself.
    """

    name = "float"

    def convert(self, value, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class FiniteRange(click.Tuple):
    """``MIN MAX``: two finite numbers with MIN below MAX."""

    def __init__(self):
        super().__init__([FiniteFloat(), FiniteFloat()])

    def convert(self, value, param, ctx) -> tuple[float, float]:
        low, high = super().convert(value, param, ctx)
        if not low < high:
            self.fail(f"MIN must be below MAX, got {low:g} {high:g}.", param, ctx)
        return low, high


class Device(click.Choice):
    """A device choice; ``cuda`` is refused when torch sees no CUDA device (torch imported only then)."""

    def convert(self, value, param, ctx) -> str:
        device = super().convert(value, param, ctx)
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                self.fail(f"{value!r}: torch sees no CUDA device (a CPU-only build, or no GPU); use cpu.", param, ctx)
        return device


reference_option = click.option(
    "--reference",
    "-r",
    type=click.Path(dir_okay=False),
    default=None,
    help="Spatial reference (NIfTI image or .trk) for formats without one (.tck, .vtk, ...).",
)
force_option = click.option("--force", "-f", is_flag=True, help="Replace an existing output.")
model_option = click.option(
    "--model",
    "-m",
    default=None,
    help="A model file, or the name of a shipped model ('default', 'discrete'). Default: default.",
)
range_option = click.option(
    "--range",
    "coordinate_range",
    type=FiniteRange(),
    default=None,
    help="MIN MAX in mm of a global normalisation the model does not record (imported published models).",
)
device_option = click.option(
    "--device", type=Device(["cpu", "cuda"]), default="cpu", show_default=True, help="Where the model runs."
)
batch_option = click.option("--batch-size", type=COUNT, default=64, show_default=True, help="Groups per forward pass.")


def key_values(ctx, param, values) -> dict:
    """Parse repeated ``KEY=VALUE`` options; values are JSON when they parse, else strings."""
    parsed = {}
    for item in values:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


# The ModelConfig fields --model-option may set, each with its bounds; the other fields have
# options of their own, or come from the cache (a test checks that these, with ``layout``,
# are every field).
MODEL_OPTION_SIZES = {
    "codebook_size": CODEBOOK_SIZE, "latent_dim": CHANNELS, "channels": CHANNELS,
    "hidden_channels": CHANNELS, "residual_channels": CHANNELS, "residual_blocks": click.IntRange(0, 64),
}
MODEL_OPTION_ELSEWHERE = {
    "preset": "--preset", "bottleneck": "--bottleneck", "bottleneck_options": "--option",
    "grouping": "the cache (tractvq prepare)",
}
_LAYOUTS = ("grid", "streamline")
_MAX_STAGES = 8


def model_options(ctx, param, values) -> dict:
    """Parse repeated ``--model-option KEY=VALUE`` into :class:`~tractvq.models.config.ModelConfig`
    fields, each checked for its type and bounds before anything is built."""
    options = {}
    for item in values:
        ((key, value),) = key_values(ctx, param, [item]).items()
        problem = _model_option_problem(key, value)
        if problem:
            raise click.BadParameter(f"{item}: {problem}", ctx=ctx, param=param)
        options[key] = value
    return options


def _model_option_problem(key: str, value) -> str | None:
    if key in MODEL_OPTION_ELSEWHERE:
        return f"set by {MODEL_OPTION_ELSEWHERE[key]}, not --model-option"
    if key == "layout":
        return None if value in _LAYOUTS else f"must be one of {', '.join(_LAYOUTS)}"
    if key not in MODEL_OPTION_SIZES:
        return f"no such ModelConfig field; --model-option takes: {', '.join(sorted({*MODEL_OPTION_SIZES, 'layout'}))}"
    sizes = MODEL_OPTION_SIZES[key]
    if key == "channels":
        if not (isinstance(value, list) and 1 <= len(value) <= _MAX_STAGES and all(map(_is_integer, value))
                and all(sizes.min <= item <= sizes.max for item in value)):
            return f"must be a list of 1 to {_MAX_STAGES} integers from {sizes.min} to {sizes.max}"
    elif not (_is_integer(value) and sizes.min <= value <= sizes.max):
        return f"must be an integer from {sizes.min} to {sizes.max}"
    return None


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def known_bundles(ctx, param, names) -> tuple[str, ...]:
    """Callback of ``--holdout-bundle``: every name must be a bundle of the command's ``sources``.

    ``sources`` must be an eager argument, so that it is parsed before this option.
    """
    return _known_labels(ctx, param, names, "bundle")


def known_subjects(ctx, param, names) -> tuple[str, ...]:
    """Callback of ``--validation-subject``: every name must be a subject of the command's
    ``sources`` (an eager argument)."""
    return _known_labels(ctx, param, names, "subject")


def _known_labels(ctx, param, names, kind: str) -> tuple[str, ...]:
    """``names`` if each is the ``kind`` (``bundle`` or ``subject``) of a source, else a usage
    error that lists the sources' ones."""
    if not names:
        return names
    from tractvq.io import find_tractograms

    known = sorted({getattr(record, kind) for record in find_tractograms(*ctx.params["sources"])})
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        raise click.BadParameter(
            f"no {kind} {', '.join(map(repr, unknown))} among the sources; their {kind}s are: {', '.join(known)}",
            ctx=ctx, param=param,
        )
    return names
