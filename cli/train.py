"""``tractvq train``: train a bundle autoencoder on a training cache."""

from __future__ import annotations

import os
import sys

import click

from tractvq.cli.options import (
    CHANNELS,
    CODEBOOK_SIZE,
    COUNT,
    PROCESSES,
    SEED,
    Device,
    FiniteFloat,
    force_option,
    key_values,
    model_options,
)

# Training options (TrainConfig field, click option) that a resumed run takes from the
# command line only when given there.
_TRAIN_FIELDS = {
    "steps": "steps", "batch_size": "batch", "lr": "lr", "lr_schedule": "lr_schedule",
    "warmup_steps": "warmup", "weight_decay": "weight_decay", "grad_clip": "grad_clip",
    "seed": "seed", "validate_every": "validate_every", "checkpoint_every": "checkpoint_every",
    "device": "device", "num_threads": "threads", "compile": "compile_model", "balance_bundles": "balance_bundles",
}


@click.command()
@click.argument("cache", type=click.Path())
@click.option("--output", "-o", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics, curves, model).")
@click.option("--preset", type=click.Choice(["paper", "compact", "basis", "compact-grid"]), default="compact", show_default=True, help="Architecture.")
@click.option("--bottleneck", default="vqdiff", show_default=True, help="Quantizer name (see `tractvq quantizers`).")
@click.option("--option", "bottleneck_options", multiple=True, callback=key_values, metavar="KEY=VALUE", help="Bottleneck option (repeatable); VALUE is parsed as JSON when it can be.")
@click.option("--codebook-size", type=CODEBOOK_SIZE, default=None, help="Number of codes K (default: the preset's).")
@click.option("--latent-dim", type=CHANNELS, default=None, help="Latent dims D (default: the preset's).")
@click.option("--model-option", "model_options", multiple=True, callback=model_options, metavar="KEY=VALUE", help="A ModelConfig size or the layout, e.g. channels=[16,32,64] (repeatable).")
@click.option("--steps", type=COUNT, default=10_000, show_default=True, help="Optimizer steps in all.")
@click.option("--batch", type=COUNT, default=64, show_default=True, help="Groups per step, over all processes.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-4, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Learning-rate schedule after the warm-up.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True, help="Linear warm-up steps.")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=0.0, show_default=True, help="AdamW weight decay.")
@click.option("--grad-clip", type=FiniteFloat(min=0, min_open=True), default=None, help="Clip the gradient norm to this value.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of weights, batches, augmentation and quantizer noise.")
@click.option("--validate-every", type=COUNT, default=500, show_default=True, help="Validate every this many steps.")
@click.option("--checkpoint-every", type=COUNT, default=1000, show_default=True, help="Write checkpoint.pt every this many steps.")
@click.option("--augment/--no-augment", default=False, show_default=True, help="Augment training groups (see the options below; docs/training.md).")
@click.option("--rotation", type=FiniteFloat(0, 180), default=5.0, show_default=True, help="With --augment: largest rotation in degrees.")
@click.option("--translation", type=FiniteFloat(min=0), default=2.0, show_default=True, help="With --augment: largest shift per axis in mm (global normalisation only).")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), default=0.1, show_default=True, help="With --augment: probability of replacing a streamline by its kept neighbour.")
@click.option("--scaling", type=FiniteFloat(0, 1, max_open=True), default=0.0, show_default=True, help="With --augment: largest relative scale change per axis (0.1: factors 0.9 to 1.1).")
@click.option("--shear", type=FiniteFloat(0, 1, max_open=True), default=0.0, show_default=True, help="With --augment: largest off-diagonal entry of a random shear.")
@click.option("--elastic", type=FiniteFloat(min=0), default=0.0, show_default=True, help="With --augment: largest displacement of a smooth random warp, in mm.")
@click.option("--jitter", type=FiniteFloat(min=0), default=0.0, show_default=True, help="With --augment: standard deviation of noise on every point, in mm.")
@click.option("--resampling", type=FiniteFloat(0, 1), default=0.0, show_default=True, help="With --augment: probability of resampling a group through P/2 to 2P points (another step size).")
@click.option("--partial-groups", type=FiniteFloat(0, 1), default=0.0, show_default=True, help="With --augment: probability of a group with fewer distinct streamlines than the group size.")
@click.option("--mixed-groups", type=FiniteFloat(0, 1), default=0.0, show_default=True, help="With --augment: probability of a group of unrelated streamlines of the split.")
@click.option("--device", type=Device(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Where to train.")
@click.option("--threads", type=PROCESSES, default=None, help="CPU threads of torch (default: torch's).")
@click.option("--balance-bundles/--no-balance-bundles", default=False, show_default=True,
              help="Draw groups so that every bundle type is seen equally often, however many groups it has.")
@click.option("--compile/--no-compile", "compile_model", default=False, show_default=True, help="torch.compile the training forward (slow start, faster steps).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its checkpoint.")
@force_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def train(
    ctx, cache, run_dir, preset, bottleneck, bottleneck_options, codebook_size, latent_dim,
    model_options, steps, batch, lr, lr_schedule, warmup, weight_decay, grad_clip, seed,
    validate_every, checkpoint_every, augment, rotation, translation, dropout, scaling, shear, elastic, jitter,
    resampling, partial_groups, mixed_groups, device, threads, balance_bundles,
    compile_model, resume, force, quiet,
) -> None:
    """Train a bundle autoencoder on CACHE (made by `tractvq prepare`).

    Writes RUN_DIR/checkpoint.pt, model.pt, metrics.jsonl, metrics.csv and curves.png.
    Ctrl-C saves a checkpoint; --resume continues exactly where it stopped (options not
    given again are taken from the checkpoint). Several processes: launch with
    `torchrun --nproc_per_node N $(which tractvq) train ...` (gloo on CPUs, NCCL on GPUs).
    """
    from dataclasses import replace

    from tractvq import training
    from tractvq.data import Augmentation
    from tractvq.errors import TractvqError

    if resume and force:
        raise click.UsageError("give --resume or --force, not both")

    given = {
        name: ctx.params[option]
        for name, option in _TRAIN_FIELDS.items()
        if ctx.get_parameter_source(option) == click.core.ParameterSource.COMMANDLINE
    }
    try:
        if resume:
            model_config, saved = training.read_run_configs(run_dir)
            train_config = replace(saved, **given)
        else:
            from tractvq.models.config import preset_config

            overrides = dict(model_options, bottleneck=bottleneck, bottleneck_options=bottleneck_options)
            if codebook_size is not None:
                overrides["codebook_size"] = codebook_size
            if latent_dim is not None:
                overrides["latent_dim"] = latent_dim
            model_config = preset_config(preset, **overrides)
            augmentation = Augmentation(
                rotation_degrees=rotation, translation_mm=translation, streamline_dropout=dropout, scaling=scaling,
                shear=shear, elastic_mm=elastic, jitter_mm=jitter, resampling=resampling,
                partial_groups=partial_groups, mixed_groups=mixed_groups,
            ) if augment else Augmentation()
            train_config = training.TrainConfig(
                steps=steps, batch_size=batch, lr=lr, lr_schedule=lr_schedule, warmup_steps=warmup,
                weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, validate_every=validate_every,
                checkpoint_every=checkpoint_every, augmentation=augmentation, device=device,
                num_threads=threads, compile=compile_model, balance_bundles=balance_bundles,
            )
    except ValueError as error:
        if isinstance(error, TractvqError):
            raise
        raise click.UsageError(str(error)) from error
    try:
        metrics = training.train(
            cache, run_dir, model_config, train_config, resume=resume, force=force, progress=not quiet
        )
    except training.TrainingInterrupted as interrupted:
        click.echo(f"\n{interrupted}; continue with --resume", err=True)
        sys.exit(130)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        shown = {key: metrics.get(key) for key in training.METRIC_COLUMNS}
        click.echo(" ".join(f"{key}={_format(value)}" for key, value in shown.items()))
        click.echo(f"wrote {run_dir}")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
