"""``tractvq reconstruct``: encode and decode in one go."""

from __future__ import annotations

from pathlib import Path

import click

from tractvq.cli.options import (
    batch_option,
    device_option,
    force_option,
    model_option,
    range_option,
    reference_option,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--output", "-o", required=True, type=click.Path(),
    help="A tractogram file, a folder, or a .npy file (published (N, 3, P) layout, one bundle).",
)
@model_option
@reference_option
@range_option
@click.option(
    "--normalisation", "--normalization", "normalization", type=click.Choice(["model", "none"]), default="model",
    show_default=True,
    help="'none': the input coordinates are already in the model's units (published .npy arrays).",
)
@batch_option
@device_option
@force_option
def reconstruct(inputs, output, model, reference, coordinate_range, normalization, batch_size, device, force) -> None:
    """Encode and decode INPUTS with a model; write the reconstruction."""
    from tractvq.encoding import reconstruct as reconstruct_inputs
    from tractvq.encoding import write_arrays, write_tractograms
    from tractvq.io import ARRAY_MM_PER_UNIT
    from tractvq.outputs import check_output

    as_array = Path(output).suffix.lower() == ".npy"
    if Path(output).suffix:
        check_output(output, force=force)
    raw = normalization == "none"
    mm_per_unit = 1.0 if raw else ARRAY_MM_PER_UNIT
    groups, reconstruction = reconstruct_inputs(
        inputs, model, reference=reference, coordinate_range=coordinate_range,
        normalization="none" if raw else None, mm_per_unit=mm_per_unit,
        batch_size=batch_size, device=device, progress=True,
    )
    if as_array:
        paths = [write_arrays(groups, reconstruction, output, mm_per_unit=mm_per_unit, force=force)]
    else:
        paths = write_tractograms(groups.to_tractograms(reconstruction), groups.sources, output, force=force)
    for path in paths:
        click.echo(f"wrote {path}")
