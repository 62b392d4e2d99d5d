"""``tractvq rate-distortion``: bytes per streamline against BUAN and MDF, for models and baselines."""

from __future__ import annotations

import click

from tractvq.cli.options import SEED, FiniteFloat, force_option, reference_option


def _baselines(ctx, param, names) -> tuple[str, ...]:
    """Check baseline names at parse time (an unknown one lists the spellings)."""
    from tractvq.baselines import make_baseline

    for name in names:
        try:
            make_baseline(name)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from error
    return names


@click.command("rate-distortion")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "-m", "models", multiple=True, help="A model file or shipped name (repeatable).")
@click.option("--baselines", "baselines", multiple=True, callback=_baselines, metavar="NAME",
              help="A baseline codec (repeatable): pca-K (K float32 PCA coefficients per streamline), "
                   "pca-K@Bbits (the same in B bits per streamline), dipy-compress-T (DIPY's compress_streamlines "
                   "at T mm, float16 points) or float16; e.g. pca-16, pca-16@36bits, dipy-compress-0.5.")
@click.option("--fit-cache", type=click.Path(exists=True, file_okay=False),
              help="Training cache whose train groups the PCA baselines are fitted on (needed with pca-*).")
@click.option("--results", "result_files", multiple=True, type=click.Path(dir_okay=False),
              help="A `bench-quantizers --domain streamlines` results.csv whose rows to add (repeatable).")
@click.option("--threshold", default=5.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="BUAN threshold in mm.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of BUAN's random generators.")
@reference_option
@click.option("--output", "-o", required=True, type=click.Path(), help="Folder to create: rate_distortion.csv, .md and .png.")
@force_option
def rate_distortion(data, models, baselines, fit_cache, result_files, threshold, seed, reference, output, force) -> None:
    """Score models and baseline codecs on DATA and plot rate against distortion.

    DATA is a training cache (its validation groups are scored) or tractograms, subject
    folders and TractoInferno roots (each model groups them its own way). Each model (-m) is
    scored like a row of `tractvq bench-quantizers --domain streamlines` (BUAN with the
    published protocol and in mm, mean and max MDF, codes, bytes); each baseline (--baselines)
    is encoded, decoded and scored the same way (BUAN in mm, MDF, the bytes it stored); rows
    of earlier benchmarks (--results) are added as they are. The plot shows BUAN and mean MDF
    against bytes per streamline, with the frontier and the published VQ-Diff models.
    """
    from tractvq.bench.rate_distortion import read_rows

    extra_rows = [row for path in result_files for row in read_rows(path)]
    if not models and not baselines and not extra_rows:
        raise click.UsageError("nothing to plot: give models (-m), --baselines or --results files")
    if any(name.startswith("pca-") for name in baselines) and fit_cache is None:
        raise click.UsageError("the pca baselines are fitted on a training cache: give --fit-cache CACHE")

    from tractvq.outputs import check_output

    check_output(output, force=force, directory=True)

    from tractvq.bench.rate_distortion import (
        RATE_DISTORTION_COLUMNS,
        plot_rate_distortion,
        score_rate_distortion,
    )
    from tractvq.bench.report import format_markdown, write_csv
    from tractvq.outputs import atomic_output

    rows = score_rate_distortion(data, models, baselines, fit_cache=fit_cache, threshold_mm=threshold, seed=seed,
                                 reference=reference)
    rows += [{"label": row["quantizer"], **row} for row in extra_rows]
    keys = [key for key, _, _ in RATE_DISTORTION_COLUMNS]
    with atomic_output(output, force=force, directory=True) as folder:
        write_csv([{key: row.get(key) for key in keys} for row in rows], folder / "rate_distortion.csv")
        (folder / "rate_distortion.md").write_text(format_markdown(rows, RATE_DISTORTION_COLUMNS))
        plot_rate_distortion(rows, folder / "rate_distortion.png", threshold_mm=threshold)
    click.echo(format_markdown(rows, RATE_DISTORTION_COLUMNS), nl=False)
    click.echo(f"wrote {output}")
