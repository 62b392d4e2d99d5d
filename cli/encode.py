"""``tractvq encode``: tractograms to a codes file, or one codes file per subject."""

from __future__ import annotations

import os

import click

from tractvq.cli.options import (
    PROCESSES,
    batch_option,
    device_option,
    force_option,
    model_option,
    range_option,
    reference_option,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--output", "-o", required=True, type=click.Path(),
    help="Codes file to write (its name ends in .npz); with --per-subject, a folder.",
)
@click.option("--per-subject", is_flag=True, help="Write one <subject>.npz per subject into the --output folder.")
@click.option(
    "--workers", type=PROCESSES, default=1, show_default=True,
    help="Subjects encoded at once, one process each (with --per-subject).",
)
@model_option
@reference_option
@range_option
@batch_option
@device_option
@force_option
def encode(inputs, output, per_subject, workers, model, reference, coordinate_range, batch_size, device, force) -> None:
    """Encode bundles into codes with a trained model.

    INPUTS are tractogram files, subject folders or TractoInferno roots. The codes file holds
    the codes, the group->streamline map and everything `tractvq decode` needs.

    With --per-subject, each subject gets its own codes file in the OUTPUT folder; subjects
    whose file exists are skipped unless --force, so a stopped run goes on where it was.
    Under torchrun (or with RANK and WORLD_SIZE set, e.g. from a Slurm array) each process
    encodes its share of the subjects.
    """
    options = dict(reference=reference, coordinate_range=coordinate_range, batch_size=batch_size, device=device)
    rank, world_size = _share()
    if per_subject:
        _encode_subjects(inputs, output, model, workers=workers, rank=rank, world_size=world_size, force=force, options=options)
        return
    if workers > 1 or world_size > 1:
        raise click.UsageError("several workers or ranks write one codes file per subject: add --per-subject")
    from tractvq.encoding import encode as encode_inputs
    from tractvq.outputs import check_output

    check_output(output, force=force, suffix=".npz")
    codes = encode_inputs(inputs, model, progress=True, **options)
    codes.save(output, force=force)
    kind = "indices" if codes.indices is not None else "latents"
    streamlines = sum(source.n_streamlines for source in codes.layout.sources)
    click.echo(
        f"wrote {output}: {len(codes.layout.sources)} bundle(s), {streamlines} streamlines,"
        f" {len(codes.layout)} groups, {kind} {codes.nbytes / len(codes.layout):.0f} bytes per group"
    )


def _share() -> tuple[int, int]:
    """``(rank, world_size)`` of this process from ``RANK`` and ``WORLD_SIZE`` (as torchrun
    sets them), ``(0, 1)`` without ``WORLD_SIZE``."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    rank, world_size = os.environ.get("RANK", ""), os.environ["WORLD_SIZE"]
    if not (rank.isdigit() and world_size.isdigit() and int(rank) < int(world_size)):
        raise click.UsageError(f"RANK={rank!r} and WORLD_SIZE={world_size!r} must be integers with 0 <= RANK < WORLD_SIZE")
    return int(rank), int(world_size)


def _encode_subjects(inputs, folder, model, *, workers, rank, world_size, force, options) -> None:
    """One codes file per subject in ``folder`` (see :func:`tractvq.study.encode_subjects`)."""
    from tractvq.study import encode_subjects

    written, skipped = encode_subjects(
        inputs, folder, model, workers=workers, rank=rank, world_size=world_size, force=force,
        progress=rank == 0, **options,
    )
    share = f" (share {rank + 1} of {world_size})" if world_size > 1 else ""
    click.echo(f"wrote {len(written)} codes file(s) to {folder}{share}; {len(skipped)} existed and were skipped")
