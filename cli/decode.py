"""``tractvq decode``: a codes file back to tractograms."""

from __future__ import annotations

import click

from tractvq.cli.options import batch_option, device_option, force_option


@click.command()
@click.argument("codes", type=click.Path(dir_okay=False))
@click.option(
    "--output", "-o", required=True, type=click.Path(),
    help="A tractogram file (one bundle, or the groups of one .trx into a .trx) or a folder (written as"
    " <subject>/tractography/<subject>__<bundle>.trk, .tck or .trx as the source was, and the groups of a .trx"
    " as <subject>/tractography/<its file name>).",
)
@click.option("--model", "-m", default=None, help="The model (default: the one the codes name; must be that one).")
@batch_option
@device_option
@force_option
def decode(codes, output, model, batch_size, device, force) -> None:
    """Decode CODES into streamlines in the original space: same count and order as encoded.

    A .trx file's groups are written back as one .trx with the same groups and members;
    per-point and per-streamline data were not encoded and are not written (a note says
    which).
    """
    from tractvq.codes import Codes
    from tractvq.encoding import decode as decode_codes
    from tractvq.encoding import plan_outputs, write_tractograms

    loaded = Codes.load(codes)
    plan_outputs(loaded.layout.sources, output, force=force)
    tractograms = decode_codes(loaded, model, batch_size=batch_size, device=device, progress=True)
    for path in write_tractograms(tractograms, loaded.layout.sources, output, force=force):
        click.echo(f"wrote {path}")
    dropped = sorted({item for source in loaded.layout.sources for item in source.dropped})
    if dropped:
        click.echo(f"note: not encoded, so not written: {', '.join(dropped)}")
