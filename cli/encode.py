"""``tractvq encode``: tractograms to a codes file."""

from __future__ import annotations

import click

from tractvq.cli.options import batch_option, device_option, force_option, model_option, range_option, reference_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Codes file to write (its name ends in .npz).")
@model_option
@reference_option
@range_option
@batch_option
@device_option
@force_option
def encode(inputs, output, model, reference, coordinate_range, batch_size, device, force) -> None:
    """Encode bundles into codes with a trained model.

    INPUTS are tractogram files, subject folders or TractoInferno roots. The codes file holds
    the codes, the group->streamline map and everything `tractvq decode` needs.
    """
    from tractvq.encoding import encode as encode_inputs
    from tractvq.outputs import check_output

    check_output(output, force=force, suffix=".npz")
    codes = encode_inputs(
        inputs, model, reference=reference, coordinate_range=coordinate_range,
        batch_size=batch_size, device=device, progress=True,
    )
    codes.save(output, force=force)
    kind = "indices" if codes.indices is not None else "latents"
    streamlines = sum(source.n_streamlines for source in codes.layout.sources)
    click.echo(
        f"wrote {output}: {len(codes.layout.sources)} bundle(s), {streamlines} streamlines,"
        f" {len(codes.layout)} groups, {kind} {codes.nbytes / len(codes.layout):.0f} bytes per group"
    )
