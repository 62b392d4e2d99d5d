"""``tractvq perturb``: robustness of a model to latent noise and to streamline order."""

from __future__ import annotations

import click

from tractvq.cli.options import (
    PROCESSES,
    SEED,
    FiniteFloat,
    batch_option,
    device_option,
    force_option,
    model_option,
    range_option,
    reference_option,
)
from tractvq.cli.render import VIEW_CHOICES, check_panel_size


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--eps", "eps", type=FiniteFloat(min=0), multiple=True, help="Std of the Gaussian latent noise (repeatable). Default: 0.1 0.5 1.0.")
@click.option("--directional/--no-directional", default=True, show_default=True,
              help="Also the published sweep: latent + alpha * 0.5 for alpha in linspace(-1, 1, 9).")
@click.option("--permutation/--no-permutation", default=True, show_default=True,
              help="Also shuffle the streamlines of each group before encoding and report the change.")
@click.option("--protocol", type=click.Choice(["mm", "paper"]), default="mm", show_default=True, help="BUAN protocol (see evaluate).")
@click.option("--threshold", type=FiniteFloat(min=0, min_open=True), default=None, help="BUAN threshold (default 6 mm; 0.05 with --protocol paper).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the noise, shuffles and BUAN.")
@click.option("--workers", type=PROCESSES, default=None, help="Processes for BUAN.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--no-bundles", is_flag=True, help="Do not write the decoded bundles.")
@click.option("--render", is_flag=True,
              help="Also draw one group decoded at every size: strip_directional.png and strip_gaussian.png (viz extra).")
@click.option("--render-group", default=None, metavar="BUNDLE:INDEX",
              help="The group --render draws: the INDEX-th group (from 0) of BUNDLE. Default: the first group.")
@click.option("--render-view", type=click.Choice(VIEW_CHOICES), default="sagittal", show_default=True,
              help="View of --render.")
@click.option("--render-size", type=(int, int), default=(200, 200), show_default=True, metavar="W H",
              help="Pixels of one panel of --render.")
@reference_option
@range_option
@batch_option
@device_option
@force_option
def perturb(inputs, model, eps, directional, permutation, protocol, threshold, seed, workers, output, no_bundles,
            render, render_group, render_view, render_size, reference, coordinate_range, batch_size, device,
            force) -> None:
    """Add noise to the latents, decode, score against the original (BUAN, MDF vs eps).

    Writes into OUTPUT: perturbation.csv, perturbation.json, perturbation.png, permutation.csv,
    (unless --no-bundles) decoded/<kind>_<size, '.' as 'p'>/<subject>/tractography/*.trk and
    (with --render) strip_<kind>.png: one group decoded at every size of each kind.
    """
    import json

    from tractvq import io
    from tractvq.buan import protocol as make_protocol
    from tractvq.encoding import group_for_model, resolve_model, write_tractograms
    from tractvq.outputs import atomic_output, check_output
    from tractvq.robustness import (
        PUBLISHED_ALPHAS,
        permutation_study,
        perturbation_study,
        plot_perturbation,
    )

    check_output(output, force=force, directory=True)
    if render:
        from tractvq.viz import backend

        check_panel_size(render_size, "--render-size")
        backend.require(purpose="tractvq perturb --render")
    chosen = make_protocol(protocol, threshold=threshold)
    resolved, _ = resolve_model(model)
    groups = group_for_model(io.find_tractograms(*inputs), resolved, reference=reference,
                             coordinate_range=coordinate_range, progress=True)
    if render:
        from tractvq.viz.inputs import parse_group

        try:
            render_index = parse_group(groups, render_group)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--render-group") from error
    result = perturbation_study(
        groups, resolved, eps or (0.1, 0.5, 1.0), alphas=PUBLISHED_ALPHAS if directional else None,
        protocol=chosen, seed=seed, workers=workers, batch_size=batch_size, device=device, progress=True,
    )
    click.echo(result.format())
    with atomic_output(output, force=force, directory=True) as folder:
        result.save_csv(folder / "perturbation.csv")
        (folder / "perturbation.json").write_text(json.dumps({"settings": result.settings, "results": result.records}, indent=2) + "\n")
        plot_perturbation(result, folder / "perturbation.png")
        if permutation:
            table, change = permutation_study(groups, resolved, protocol=chosen, seed=seed, workers=workers,
                                              batch_size=batch_size, device=device)
            table.save_csv(folder / "permutation.csv")
            click.echo(table.format())
            click.echo("change (permuted - ordered), all groups: "
                       + ", ".join(f"{key} {value:+.5f}" for key, value in change["all"].items()))
        if not no_bundles:
            for (kind, size), decoded in result.reconstructions.items():
                write_tractograms(groups.to_tractograms(decoded), groups.sources, folder / "decoded" / f"{kind}_{size:g}".replace(".", "p"))
        if render:
            from tractvq.viz.images import save_image
            from tractvq.viz.strip import perturbation_strip

            for kind in dict.fromkeys(name for name, _ in result.reconstructions):
                strip = perturbation_strip(groups, result, group=render_index, kind=kind, view=render_view, size=render_size)
                save_image(strip, folder / f"strip_{kind}.png")
    click.echo(f"wrote {output}")
