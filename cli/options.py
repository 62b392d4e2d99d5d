"""Options shared by several commands."""

from __future__ import annotations

import json

import click

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
    type=(float, float),
    default=None,
    help="MIN MAX in mm of a global normalisation the model does not record (imported published models).",
)
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where the model runs."
)
batch_option = click.option("--batch-size", default=64, show_default=True, help="Groups per forward pass.")


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
