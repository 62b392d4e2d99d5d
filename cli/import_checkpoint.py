"""``tractvq import-checkpoint``: a published VQ-Diff state-dict to a tractvq model."""

from __future__ import annotations

import click

from tractvq.cli.options import force_option

_KINDS = ("ae", "vq", "vq-ema", "vqdiff")  # tractvq.models.PUBLISHED_KINDS, without importing torch


@click.command("import-checkpoint")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--kind",
    required=True,
    type=click.Choice(_KINDS),
    help="Published model: ae (identity), vq, vq-ema or vqdiff.",
)
@click.option(
    "--output", "-o", required=True, type=click.Path(dir_okay=False), help="Model file to write."
)
@force_option
def import_checkpoint(file, kind, output, force) -> None:
    """Convert a state-dict published with VQ-Diff (github.com/drewrl3v/diff-vq-vae) into a
    tractvq model of the 'paper' preset.

    The model records the published preprocessing (consecutive groups of 64 streamlines in
    file order, no re-orientation or re-ordering, global min-max normalisation). The
    published minimum and maximum were not published: give them when encoding.
    """
    from tractvq.models import import_published

    model = import_published(file, kind, path_out=output, force=force)
    click.echo(f"wrote {output} ({kind}: bottleneck {model.config.bottleneck!r}, preset 'paper')")
