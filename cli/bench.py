"""``tractvq bench-quantizers``: every quantizer in the same small VQ-VAE, at equal budget."""

from __future__ import annotations

import click

from tractvq.cli.options import force_option

DOMAINS = ("digits", "cifar10", "streamlines")


@click.command("bench-quantizers")
@click.option(
    "--domain",
    type=click.Choice(DOMAINS),
    default="digits",
    show_default=True,
    help="digits: scikit-learn's bundled 8x8 handwritten digits; cifar10: the CIFAR-10 python batches in --data-dir.",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder of the CIFAR-10 python batches (cifar10 only).")
@click.option("--quantizer", "-q", "names", multiple=True, metavar="NAME", help="A quantizer to train (repeatable; default: all, see `tractvq quantizers`).")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1), help="Training steps per quantizer.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per training step.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed of the weights, the batches and the methods' noise (the digits train/test split is fixed).")
@click.option("--codebook-size", default=512, show_default=True, type=click.IntRange(min=2), help="Codes K of every quantizer with a codebook.")
@click.option("--dim", default=64, show_default=True, type=click.IntRange(min=1), help="Latent channels D.")
@click.option("--output", "-o", required=True, type=click.Path(), help="Folder to create: results.csv, results.md, results.png, settings.json.")
@force_option
def bench_quantizers(domain, data_dir, names, steps, batch_size, lr, seed, codebook_size, dim, output, force) -> None:
    """Benchmark quantizers in a small image VQ-VAE.

    Trains a small convolutional autoencoder with each quantizer as its bottleneck, with the
    same seed and budget, and writes the test MSE, PSNR, code perplexity and usage, and the
    time per training step, as CSV, Markdown and a plot into the folder --output.
    """
    if domain == "streamlines":
        raise click.BadParameter("the streamlines domain comes with the models; it is not available yet", param_hint="'--domain'")
    if domain == "cifar10" and data_dir is None:
        raise click.UsageError("--domain cifar10 needs --data-dir, the folder of the CIFAR-10 python batches")
    if domain != "cifar10" and data_dir is not None:
        raise click.UsageError(f"--data-dir is for --domain cifar10 only, not {domain}")

    from tractvq.outputs import check_output

    check_output(output, force=force)  # refuse before training, not after

    import torch

    from tractvq import __version__
    from tractvq.bench import load_cifar10, load_digits, run_benchmark, write_results
    from tractvq.bench.report import format_markdown
    from tractvq.quantizers import available

    known = [name for name, _, _ in available()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown quantizer {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}",
            param_hint="'--quantizer'",
        )
    names = list(dict.fromkeys(names)) or known
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
