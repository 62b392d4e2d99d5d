"""``tractvq rate-distortion``: bytes per bundle against BUAN and MDF, one point per model."""

from __future__ import annotations

import click

from tractvq.cli.options import force_option


@click.command("rate-distortion")
@click.argument("cache", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "models", multiple=True, help="A model file or shipped name (repeatable).")
@click.option("--results", "result_files", multiple=True, type=click.Path(dir_okay=False),
              help="A `bench-quantizers --domain streamlines` results.csv whose rows to add (repeatable).")
@click.option("--threshold", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="BUAN threshold in mm.")
@click.option("--seed", default=0, show_default=True, help="Seed of BUAN's random generators.")
@click.option("--output", "-o", required=True, type=click.Path(), help="Folder to create: rate_distortion.csv, .md and .png.")
@force_option
def rate_distortion(cache, models, result_files, threshold, seed, output, force) -> None:
    """Score models on CACHE's validation groups and plot rate against distortion.

    Each model (-m, repeatable) is scored like a row of `tractvq bench-quantizers --domain
    streamlines` (BUAN with the published protocol and in mm, mean MDF, codes, bytes per
    bundle); rows of earlier benchmarks (--results) are added as they are. The plot marks
    the published VQ-Diff table's models.
    """
    from tractvq.bench.rate_distortion import read_rows

    extra_rows = [row for path in result_files for row in read_rows(path)]
    if not models and not extra_rows:
        raise click.UsageError("nothing to plot: give models (-m) or --results files")

    from tractvq.outputs import check_output

    check_output(output, force=force)

    from tractvq.bench.rate_distortion import plot_rate_distortion
    from tractvq.bench.report import format_markdown, write_csv
    from tractvq.bench.streamlines import STREAMLINE_COLUMNS, model_row
    from tractvq.cache import load_cache
    from tractvq.encoding import resolve_model
    from tractvq.evaluate import model_label
    from tractvq.outputs import atomic_output

    validation = load_cache(cache).split("validation")
    rows, labels = [], []
    for name in models:
        model, source = resolve_model(name)
        label = model_label(source or name, labels)
        labels.append(label)
        rows.append({"label": label, **model_row(model, validation, threshold_mm=threshold, seed=seed)})
    rows += [{"label": row["quantizer"], **row} for row in extra_rows]
    columns = (("label", "Model", "{}"), *STREAMLINE_COLUMNS[1:-1])
    with atomic_output(output, force=force, directory=True) as folder:
        write_csv([{key: row.get(key) for key, _, _ in columns} for row in rows], folder / "rate_distortion.csv")
        (folder / "rate_distortion.md").write_text(format_markdown(rows, columns))
        plot_rate_distortion(rows, folder / "rate_distortion.png", threshold_mm=threshold)
    click.echo(format_markdown(rows, columns), nl=False)
    click.echo(f"wrote {output}")
