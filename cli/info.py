"""``tractvq info``: what is in tractograms."""

from __future__ import annotations

import json

import click

from tractvq.cli.options import reference_option


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@reference_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list of objects) instead of a table.")
def info(paths: tuple[str, ...], reference: str | None, as_json: bool) -> None:
    """Describe tractograms: streamlines, points, lengths, extent, space, problems.

    PATHS are tractogram files (.trk .tck .trx .vtk .vtp .fib .dpy, or published .npy
    arrays), subject folders, TractoInferno roots or plain folders of tractograms. Each
    group of a .trx file is a bundle (its streamlines in no group one more, "ungrouped").
    """
    from tractvq.io import find_tractograms
    from tractvq.summary import format_summaries, summarize

    summaries = [summarize(record, reference) for record in find_tractograms(*paths)]
    click.echo(json.dumps(summaries, indent=2) if as_json else format_summaries(summaries))
