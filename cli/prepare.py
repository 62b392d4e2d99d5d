"""``tractvq prepare``: tractograms to a training cache."""

from __future__ import annotations

import click

from tractvq.cli.options import (
    COUNT,
    SEED,
    FiniteFloat,
    FiniteRange,
    force_option,
    known_bundles,
    known_subjects,
    reference_option,
)


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(), is_eager=True)  # read by --holdout-bundle, --validation-subject
@click.option("--output", "-o", required=True, type=click.Path(), help="Cache folder to create.")
@reference_option
@click.option("--points", "n_points", type=click.IntRange(2, 4096), default=64, show_default=True, help="Points per streamline.")
@click.option("--group-size", type=click.IntRange(1, 4096), default=64, show_default=True, help="Streamlines per group.")
@click.option(
    "--grouping",
    type=click.Choice(["spatial", "sequential", "random"]),
    default="spatial",
    show_default=True,
    help="Which streamlines share a group.",
)
@click.option("--orient/--no-orient", default=True, show_default=True, help="Make the streamlines of a group run the same way.")
@click.option("--order/--no-order", default=True, show_default=True, help="Sort the streamlines of a group canonically.")
@click.option(
    "--normalization",
    type=click.Choice(["group", "global"]),
    default="group",
    show_default=True,
    help="Per-group centre and scale, or global min-max to [-1, 1].",
)
@click.option("--range", "coordinate_range", type=FiniteRange(), default=None, help="MIN MAX in mm of the global normalisation (default: fitted to the data).")
@click.option("--paper", is_flag=True, help="The published preprocessing: sequential groups, no orient/order, global normalisation.")
@click.option("--mm-per-unit", type=FiniteFloat(min=0, min_open=True), default=100.0, show_default=True, help="Scale of published .npy arrays.")
@click.option("--validation-fraction", type=FiniteFloat(0, 1, max_open=True), default=0.1, show_default=True, help="Held-out fraction of subjects (or of groups for one subject).")
@click.option("--validation-subject", "validation_subjects", multiple=True, callback=known_subjects, help="Hold out this whole subject (repeatable), instead of a random --validation-fraction.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random grouping, the subsampling and the split.")
@click.option("--holdout-bundle", "holdout_bundles", multiple=True, callback=known_bundles, help="Hold out every group of this bundle (repeatable): validation only, for generalisation.")
@click.option("--max-streamlines-per-bundle", type=COUNT, default=None, help="Keep at most this many streamlines of each bundle (seeded subset), so that large bundles do not dominate training.")
@force_option
@click.pass_context
def prepare(
    ctx, sources, output, reference, n_points, group_size, grouping, orient, order, normalization,
    coordinate_range, paper, mm_per_unit, validation_fraction, validation_subjects, seed, holdout_bundles,
    max_streamlines_per_bundle, force,
) -> None:
    """Turn tractograms into a training cache folder (groups, labels, split).

    SOURCES are TractoInferno roots, split or subject folders, plain folders or files.
    """
    from dataclasses import replace

    from tractvq.bundles import PAPER_SETTINGS, GroupingSettings
    from tractvq.cache import prepare as prepare_cache
    from tractvq.errors import TractvqError

    fraction_given = ctx.get_parameter_source("validation_fraction") == click.core.ParameterSource.COMMANDLINE
    if validation_subjects and fraction_given:
        raise click.UsageError("give --validation-fraction or --validation-subject, not both")
    try:
        if paper:
            settings = replace(PAPER_SETTINGS, n_points=n_points, group_size=group_size, seed=seed)
        else:
            settings = GroupingSettings(
                n_points=n_points, group_size=group_size, strategy=grouping, orient=orient,
                order=order, normalization=normalization, seed=seed,
            )
        if coordinate_range is not None:
            settings = replace(settings, minimum=coordinate_range[0], maximum=coordinate_range[1])
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        path = prepare_cache(
            sources, output, settings, reference=reference, mm_per_unit=mm_per_unit,
            validation_fraction=validation_fraction, seed=seed, holdout_bundles=holdout_bundles,
            validation_subjects=validation_subjects, max_streamlines_per_bundle=max_streamlines_per_bundle, force=force,
        )
    except ValueError as error:
        if isinstance(error, TractvqError):  # a file's problem: the group's one-line error
            raise
        raise click.UsageError(str(error)) from error  # the options' (e.g. every subject held out)
    click.echo(f"wrote {path}")
