"""``tractvq bench-quantizers``: every quantizer in the same model, at equal budget."""

from __future__ import annotations

import click

from tractvq.cli.options import (
    CHANNELS,
    CODEBOOK_SIZE,
    COUNT,
    PROCESSES,
    SEED,
    FiniteFloat,
    force_option,
)

DOMAINS = ("digits", "cifar10", "streamlines")


def _split_options(ctx, param, values) -> dict:
    """Parse repeated ``QUANTIZER:KEY=VALUE`` options into ``{quantizer: {key: value}}``."""
    from tractvq.cli.options import key_values

    options: dict[str, dict] = {}
    for item in values:
        name, separator, assignment = item.partition(":")
        if not separator or not name:
            raise click.BadParameter(f"expected QUANTIZER:KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        options.setdefault(name, {}).update(key_values(ctx, param, [assignment]))
    return options


@click.command("bench-quantizers")
@click.option(
    "--domain",
    type=click.Choice(DOMAINS),
    default="digits",
    show_default=True,
    help="digits: scikit-learn's bundled 8x8 handwritten digits; cifar10: the CIFAR-10 python batches in"
    " --data-dir; streamlines: bundle autoencoders on the training cache in --data-dir (`tractvq prepare`).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="CIFAR-10 batches (cifar10) or a training cache (streamlines).")
@click.option("--quantizer", "-q", "names", multiple=True, metavar="NAME", help="A quantizer to train (repeatable; default: all, see `tractvq quantizers`).")
@click.option("--steps", default=1000, show_default=True, type=COUNT, help="Training steps per quantizer.")
@click.option("--batch-size", default=64, show_default=True, type=COUNT, help="Images or bundles per training step.")
@click.option("--lr", default=1e-3, show_default=True, type=FiniteFloat(min=0, min_open=True), help="Peak learning rate (Adam).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the weights, the batches and the methods' noise (the digits train/test split is fixed).")
@click.option("--codebook-size", type=CODEBOOK_SIZE, default=None, help="Codes K of every quantizer with a codebook (default: 512 for images, the preset's for streamlines).")
@click.option("--dim", type=CHANNELS, default=None, help="Latent channels D (default: 64 for images, the preset's for streamlines).")
@click.option("--preset", type=click.Choice(["paper", "compact", "basis", "compact-grid"]), default="compact", show_default=True, help="streamlines: the model preset.")
@click.option("--option", "quantizer_options", multiple=True, callback=_split_options, metavar="QUANTIZER:KEY=VALUE", help="streamlines: an option of one quantizer, e.g. vqdiff:eval_mode=mean (repeatable).")
@click.option("--augment/--no-augment", default=True, show_default=True, help="streamlines: augment training groups as `tractvq train --augment`.")
@click.option("--threshold", default=5.0, show_default=True, type=FiniteFloat(min=0, min_open=True), help="streamlines: BUAN threshold in mm (next to the published protocol's).")
@click.option("--threads", type=PROCESSES, default=None, help="streamlines: CPU threads of torch (default: torch's).")
@click.option("--resume", is_flag=True, help="streamlines: keep the finished runs in --output, resume stopped ones, train the rest.")
@click.option("--quiet", "quiet", is_flag=True, help="No progress bars.")
@click.option("--output", "-o", required=True, type=click.Path(), help="Folder to create: results.csv, results.md, results.png, settings.json (streamlines: + rate_distortion.png, runs/).")
@force_option
def bench_quantizers(domain, data_dir, names, steps, batch_size, lr, seed, codebook_size, dim, preset, quantizer_options,
                     augment, threshold, threads, resume, quiet, output, force) -> None:
    """Benchmark quantizers at equal budget and seed.

    Images (digits, cifar10): a small convolutional autoencoder per quantizer; writes the test
    MSE, PSNR, code perplexity and usage, and the time per training step.

    Streamlines: the bundle autoencoder of --preset per quantizer, trained with `tractvq train`'s
    loop on the cache in --data-dir (runs kept in OUTPUT/runs/QUANTIZER) and scored on the
    cache's validation groups: BUAN (published protocol and --threshold mm), mean MDF in mm,
    MSE, perplexity, usage, bytes per bundle and time per step.
    """
    from tractvq.quantizers import available

    known = [name for name, _, _ in available()]
    unknown = [name for name in (*names, *quantizer_options) if name not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown quantizer {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}",
            param_hint="'--quantizer'",
        )
    names = list(dict.fromkeys(names)) or known
    if domain in ("cifar10", "streamlines") and data_dir is None:
        what = "the folder of the CIFAR-10 python batches" if domain == "cifar10" else "a training cache (`tractvq prepare`)"
        raise click.UsageError(f"--domain {domain} needs --data-dir, {what}")
    if domain == "digits" and data_dir is not None:
        raise click.UsageError("--data-dir is for --domain cifar10 or streamlines, not digits")
    if domain != "streamlines":
        given = [flag for flag, value in (("--option", quantizer_options), ("--resume", resume), ("--threads", threads)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} is for --domain streamlines only")
        _bench_images(domain, data_dir, names, steps, batch_size, lr, seed, codebook_size or 512, dim or 64, output, force)
    else:
        _bench_streamlines(data_dir, names, steps, batch_size, lr, seed, codebook_size, dim, preset, quantizer_options,
                           augment, threshold, threads, resume, quiet, output, force)


def _bench_images(domain, data_dir, names, steps, batch_size, lr, seed, codebook_size, dim, output, force) -> None:
    from tractvq.outputs import check_output

    check_output(output, force=force, directory=True)  # refuse before training, not after

    import torch

    from tractvq import __version__
    from tractvq.bench import load_cifar10, load_digits, run_benchmark, write_results
    from tractvq.bench.report import format_markdown

    dataset = load_digits(seed=0) if domain == "digits" else load_cifar10(data_dir)
    try:
        rows = run_benchmark(
            names, dataset, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
            codebook_size=codebook_size, dim=dim,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    settings = {
        "domain": domain, "data_dir": data_dir, "quantizers": names, "steps": steps,
        "batch_size": batch_size, "lr": lr, "seed": seed, "codebook_size": codebook_size,
        "dim": dim, "train_images": len(dataset.train), "test_images": len(dataset.test),
        "torch_threads": torch.get_num_threads(), "tractvq": __version__,
    }
    title = f"{domain}: {steps} steps of {batch_size}, lr {lr:g}, seed {seed}"
    path = write_results(rows, output, settings=settings, title=title, force=force)
    click.echo(format_markdown(rows), nl=False)
    click.echo(f"wrote {path}")


def _bench_streamlines(cache, names, steps, batch_size, lr, seed, codebook_size, dim, preset, quantizer_options,
                       augment, threshold, threads, resume, quiet, output, force) -> None:
    import os
    import shutil
    from dataclasses import asdict
    from pathlib import Path

    from tractvq import __version__
    from tractvq.bench.rate_distortion import plot_rate_distortion
    from tractvq.bench.report import format_markdown, write_result_files
    from tractvq.bench.streamlines import (
        STREAMLINE_COLUMNS,
        plot_streamline_results,
        run_streamline_benchmark,
    )
    from tractvq.cache import load_cache
    from tractvq.data import Augmentation
    from tractvq.models.autoencoder import BundleAutoencoder
    from tractvq.models.config import preset_config
    from tractvq.outputs import atomic_output, check_output
    from tractvq.training import TrainConfig

    if resume and force:
        raise click.UsageError("give --resume or --force, not both")
    training_groups = len(load_cache(cache).split("train"))  # a bad cache fails before anything is written
    if batch_size > training_groups:
        raise click.BadParameter(
            f"{batch_size} is more than the {training_groups} groups of the training split of {cache}",
            param_hint="'--batch-size'",
        )
    sizes = {key: value for key, value in (("codebook_size", codebook_size), ("latent_dim", dim)) if value is not None}

    def model_config_for(name: str):
        return preset_config(preset, bottleneck=name, bottleneck_options=quantizer_options.get(name, {}), **sizes)

    try:
        for name in names:
            BundleAutoencoder(model_config_for(name))  # every model builds before the first run starts
        train_config = TrainConfig(
            steps=steps, batch_size=batch_size, lr=lr, lr_schedule="cosine", warmup_steps=steps // 25,
            seed=seed, validate_every=max(1, steps // 4), checkpoint_every=max(1, steps // 4),
            augmentation=Augmentation(5.0, 2.0, 0.1) if augment else Augmentation(), device="cpu",
            num_threads=threads,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    output = Path(output)
    if not (resume and output.is_dir()):
        check_output(output, force=force, directory=True)
        if output.is_dir():
            if os.listdir(output) and not (output / "settings.json").is_file():
                from tractvq.errors import OutputError

                raise OutputError(output, "is not a benchmark folder (no settings.json); refusing to replace it, even with --force")
            shutil.rmtree(output)  # a previous benchmark's folder, replaced whole
        output.mkdir()
    settings = {
        "domain": "streamlines", "cache": str(cache), "preset": preset, "quantizers": names,
        "quantizer_options": quantizer_options, "train_config": asdict(train_config),
        "buan_threshold_mm": threshold, "seed": seed, "tractvq": __version__,
    }
    title = f"streamlines, {preset}: {steps} steps of {batch_size}, lr {lr:g}, seed {seed}"
    done = []

    def save(row: dict) -> None:  # the table grows as runs finish, so a stopped benchmark shows its progress
        done.append(row)
        write_result_files(done, output, columns=STREAMLINE_COLUMNS, plot=plot_streamline_results, settings=settings, title=title)
        with atomic_output(output / "rate_distortion.png", force=True) as path:
            plot_rate_distortion(done, path, title=title, threshold_mm=threshold)

    rows = run_streamline_benchmark(
        names, cache, output / "runs", model_config_for=model_config_for, train_config=train_config,
        threshold_mm=threshold, seed=seed, progress=not quiet, on_row=save,
    )
    click.echo(format_markdown(rows, STREAMLINE_COLUMNS), nl=False)
    click.echo(f"wrote {output}")
