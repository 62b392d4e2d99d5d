"""``tractvq latent-map``: t-SNE of group latents and a group's nearest neighbours, as a picture."""

from __future__ import annotations

import click

from tractvq.cli.options import (
    SEED,
    batch_option,
    device_option,
    force_option,
    model_option,
    range_option,
    reference_option,
)
from tractvq.cli.render import background_option, check_background, check_panel_size, view_option


@click.command("latent-map")
@click.argument("inputs", metavar="DATA...", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Image to write (.png or .jpg).")
@click.option("--query", "-q", default=None, metavar="BUNDLE:INDEX",
              help="The group to show with its neighbours: the INDEX-th group (from 0) of BUNDLE. Default: the first group.")
@click.option("--neighbours", "--neighbors", "-k", "neighbours", type=click.IntRange(1), default=5, show_default=True,
              help="How many nearest groups in latent space to draw.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of t-SNE.")
@view_option
@click.option("--panel-size", type=(int, int), default=(220, 220), show_default=True, metavar="W H",
              help="Pixels of one FURY panel.")
@background_option
@reference_option
@range_option
@batch_option
@device_option
@force_option
def latent_map(inputs, model, output, query, neighbours, seed, view, panel_size, background, reference,
               coordinate_range, batch_size, device, force) -> None:
    """Map the latents of DATA's groups (t-SNE, coloured by bundle) and draw a query group
    beside its nearest neighbours in latent space.

    DATA are tractogram files, subject folders or TractoInferno roots, grouped with the
    model's preprocessing. Needs the viz extra: pip install "tractvq[viz]".
    """
    from tractvq import io
    from tractvq.encoding import group_for_model, resolve_model
    from tractvq.viz import backend
    from tractvq.viz.images import check_image_path, save_image
    from tractvq.viz.inputs import parse_group
    from tractvq.viz.latent_map import latent_map as make_map

    check_panel_size(panel_size, "--panel-size")
    check_image_path(output, force=force)
    backend.require(purpose="tractvq latent-map")
    backend.require("sklearn", purpose="tractvq latent-map")
    check_background(background)
    resolved, _ = resolve_model(model)
    groups = group_for_model(io.find_tractograms(*inputs), resolved, reference=reference,
                             coordinate_range=coordinate_range, progress=True)
    try:
        index = parse_group(groups, query)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--query") from error
    if neighbours >= len(groups) or len(groups) < 4:
        raise click.BadParameter(f"DATA has {len(groups)} groups: a map needs at least 4 and more than --neighbours",
                                 param_hint="--neighbours")
    result = make_map(groups, resolved, query=index, neighbours=neighbours, seed=seed, view=view,
                      panel_size=panel_size, background=background, batch_size=batch_size, device=device)
    click.echo(f"query {result.labels[result.query]}; nearest in latent space: "
               + ", ".join(f"{result.labels[g]} ({d:.3f})" for g, d in zip(result.neighbours, result.distances)))
    click.echo(f"wrote {save_image(result.image, output, force=force)}")
