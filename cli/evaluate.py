"""``tractvq evaluate``: BUAN, MDF and code statistics, per bundle, one table."""

from __future__ import annotations

import click

from tractvq.cli.options import (
    PROCESSES,
    SEED,
    FiniteFloat,
    batch_option,
    device_option,
    force_option,
    range_option,
    reference_option,
)

METRIC_CHOICES = ("buan", "mdf", "mse", "perplexity", "usage")


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", "models", multiple=True, help="A model file or shipped name (repeatable: models side by side).")
@click.option("--metric", "metrics", multiple=True, type=click.Choice(METRIC_CHOICES), help="Metric (repeatable). Default: buan and mdf.")
@click.option("--protocol", type=click.Choice(["mm", "paper"]), default="mm", show_default=True,
              help="BUAN per group in mm, or in the normalised coordinates with threshold 0.05 (the published table).")
@click.option("--threshold", type=FiniteFloat(min=0, min_open=True), default=None, help="BUAN threshold (default 6 mm; 0.05 with --protocol paper).")
@click.option("--clust-thr", "clust_thr", type=FiniteFloat(min=0), multiple=True, help="BUAN clustering threshold (repeatable; default 0: every streamline).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of BUAN's random generators.")
@click.option("--workers", type=PROCESSES, default=None, help="Processes (default: all cores on large inputs).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write the table as CSV.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the table and settings as JSON.")
@reference_option
@range_option
@batch_option
@device_option
@force_option
def evaluate(inputs, models, metrics, protocol, threshold, clust_thr, seed, workers, csv_path, json_path,
             reference, coordinate_range, batch_size, device, force) -> None:
    """Score reconstructions: per-bundle mean ± std over 64-streamline groups.

    \b
    tractvq evaluate ORIGINAL RECON        two tractograms/folders (or RECON a codes file)
    tractvq evaluate DATA -m MODEL [-m M2] encode + decode + score, models side by side
    tractvq evaluate CACHE -m MODEL        a cache's validation split, held-out bundles apart
    """
    from pathlib import Path

    from tractvq import evaluate as evaluation
    from tractvq.buan import protocol as make_protocol
    from tractvq.outputs import check_output
    from tractvq.scoring import DEFAULT_METRICS

    for path in (csv_path, json_path):
        if path is not None:
            check_output(path, force=force)
    metrics = metrics or DEFAULT_METRICS
    try:
        chosen = make_protocol(protocol, threshold=threshold, clust_thr=clust_thr or None)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    if len(inputs) == 1 and (Path(inputs[0]) / "manifest.json").is_file():
        if not models:
            raise click.UsageError("evaluating a cache needs a model (-m)")
        if coordinate_range is not None:
            raise click.UsageError("--range does not apply to a cache: its groups are already normalised")
        from tractvq.cache import load_cache
        from tractvq.robustness import generalisation_study

        table = generalisation_study(load_cache(inputs[0]), models, metrics=metrics, protocol=chosen, seed=seed,
                                     workers=workers, batch_size=batch_size, device=device)
    elif models:
        table, _ = evaluation.evaluate_models(
            inputs, models, metrics=metrics, protocol=chosen, seed=seed, workers=workers, reference=reference,
            coordinate_range=coordinate_range, batch_size=batch_size, device=device, progress=True,
        )
    else:
        if len(inputs) != 2:
            raise click.UsageError("give ORIGINAL and RECON, or DATA with one or more -m MODEL")
        if chosen.name == "paper" and coordinate_range is None:
            raise click.UsageError(
                "--protocol paper scores in the published global normalisation, whose range is not in"
                " the files: give --range MIN MAX in mm (-100 100 for the published .npy arrays,"
                " read at 100 mm per unit)"
            )
        table, _ = evaluation.evaluate_reconstruction(
            inputs[0], inputs[1], metrics=metrics, protocol=chosen, seed=seed, workers=workers,
            coordinate_range=coordinate_range, reference=reference, progress=True,
        )
    click.echo(table.format())
    click.echo(f"BUAN: protocol {chosen.name}, threshold {chosen.threshold} {chosen.units},"
               f" clust_thr {list(chosen.clust_thr)}, seed {seed}; MDF in mm")
    if csv_path is not None:
        click.echo(f"wrote {table.save_csv(csv_path, force=force)}")
    if json_path is not None:
        click.echo(f"wrote {table.save_json(json_path, force=force)}")
