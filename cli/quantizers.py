"""``tractvq quantizers``: the bottlenecks that can be named."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list of objects) instead of a table.")
def quantizers(as_json: bool) -> None:
    """List the quantizers and their papers.

    One line each: name, discrete or continuous, description, paper reference.
    """
    from tractvq.bench.zoo import describe_quantizers, format_quantizers

    rows = describe_quantizers()
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False) if as_json else format_quantizers(rows))
