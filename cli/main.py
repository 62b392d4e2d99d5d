"""The ``tractvq`` command group.

Each command parses its options, checks paths, calls one library function and writes its
result. Heavy imports (DIPY, torch) happen inside commands, so ``tractvq --help`` and
``tractvq --version`` are instant. A :class:`~tractvq.errors.TractvqError` becomes one line on
stderr and exit status 2; ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from tractvq._version import __version__
from tractvq.cli.bench import bench_quantizers
from tractvq.cli.decode import decode
from tractvq.cli.encode import encode
from tractvq.cli.evaluate import evaluate
from tractvq.cli.import_checkpoint import import_checkpoint
from tractvq.cli.info import info
from tractvq.cli.latent_map import latent_map
from tractvq.cli.perturb import perturb
from tractvq.cli.prepare import prepare
from tractvq.cli.quantizers import quantizers
from tractvq.cli.rate_distortion import rate_distortion
from tractvq.cli.reconstruct import reconstruct
from tractvq.cli.render import render
from tractvq.cli.train import train


class _Group(click.Group):
    """A click group that turns tractvq's errors into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ValueError as error:
            from tractvq.errors import TractvqError

            if not isinstance(error, TractvqError) or ctx.meta.get("tractvq.verbose"):
                raise
            _erase_progress_bars()
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)


def _erase_progress_bars() -> None:
    """Close the progress bars an error interrupted, erasing their line, so that the error
    is the only line after the finished ones (not glued to a bar, nor followed by one when
    the bar is closed later)."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):  # tqdm's own registry of open bars
        bar.leave = False
        bar.close()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="tractvq")
@click.option("--verbose", "-v", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Encode white-matter bundles of tractography streamlines with vector-quantized
    autoencoders."""
    ctx.meta["tractvq.verbose"] = verbose


cli.add_command(import_checkpoint)
cli.add_command(info)
cli.add_command(prepare)
cli.add_command(quantizers)
cli.add_command(bench_quantizers)
cli.add_command(rate_distortion)
cli.add_command(train)
cli.add_command(encode)
cli.add_command(decode)
cli.add_command(reconstruct)
cli.add_command(evaluate)
cli.add_command(perturb)
cli.add_command(render)
cli.add_command(latent_map)


def main() -> None:
    """Entry point of the ``tractvq`` console script (importing tractvq has set
    ``OMP_WAIT_POLICY``, see :mod:`tractvq`)."""
    cli(prog_name="tractvq")


if __name__ == "__main__":
    main()
