"""Encode a study: one codes file per subject, in parallel, resumable, across machines.

::

    written, skipped = encode_subjects(["TractoInferno/"], "codes/", workers=4)  # codes/<subject>.npz

The subjects are those :func:`tractvq.io.find_tractograms` finds. Each codes file appears
whole (:func:`tractvq.outputs.atomic_output`) and a subject whose file exists is skipped
(unless ``force``), so a run that was stopped continues where it was.

On one machine, ``workers`` processes encode one subject each at a time (one torch thread
each). Across machines, a launcher starts one process per share and tells it its ``rank``
among ``world_size``: ``torchrun`` sets ``RANK`` and ``WORLD_SIZE`` (the command line reads
them), a Slurm array gives ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``. Share
``rank`` takes the subjects ``i % world_size == rank`` of the sorted list; no process talks
to another.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from tractvq import io
from tractvq.encoding import ModelLike, _input_paths, _name_part, encode, resolve_model
from tractvq.errors import OutputError
from tractvq.outputs import check_folder, check_inside, check_overwrite, output_error

__all__ = ["SubjectJob", "encode_subjects", "plan_subjects"]


@dataclass(frozen=True)
class SubjectJob:
    """One subject to encode.

    Attributes
    ----------
    subject : str
        Its name, as found (data: never a path).
    files : tuple of pathlib.Path
        Its tractogram files, in :func:`tractvq.io.find_tractograms` order.
    output : pathlib.Path
        Its codes file, ``<folder>/<safe subject name>.npz``.
    """

    subject: str
    files: tuple[Path, ...]
    output: Path


def plan_subjects(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> list[SubjectJob]:
    """The subjects of ``inputs`` that share ``rank`` of ``world_size`` encodes, checked
    before any work.

    Parameters
    ----------
    inputs : str or os.PathLike or sequence of them
        Dataset roots, subject folders or files (see :func:`tractvq.io.find_tractograms`).
    folder : str or os.PathLike
        The folder of codes files (created with its missing parents when written).
    rank, world_size : int, optional
        This share and the number of shares: subject ``i`` (sorted by name) goes to share
        ``i % world_size``.

    Returns
    -------
    list of SubjectJob

    Raises
    ------
    ValueError
        If ``rank`` is not in ``0..world_size - 1``.
    OutputError
        If two subjects' names give one file name once made safe, or the folder cannot be
        written (see :func:`tractvq.outputs.check_folder`).
    TractogramError
        If an input does not exist or holds no tractogram.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank} (world size {world_size})")
    folder = check_folder(folder)
    files: dict[str, list[Path]] = {}
    for record in io.find_tractograms(*_input_paths(inputs)):
        paths = files.setdefault(record.subject, [])
        if record.path not in paths:  # the groups of a .trx file are one file
            paths.append(record.path)
    owners: dict[Path, str] = {}
    jobs = []
    for subject in sorted(files):
        output = folder / f"{_name_part(subject, 'sub-unknown')}.npz"
        if output in owners:
            raise OutputError(
                folder, f"subjects {owners[output]!r} and {subject!r} would both be written to {output.name}"
            )
        owners[output] = subject
        jobs.append(SubjectJob(subject, tuple(files[subject]), output))
    return jobs[rank::world_size]


def encode_subjects(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    model: ModelLike = None,
    *,
    workers: int = 1,
    rank: int = 0,
    world_size: int = 1,
    force: bool = False,
    progress: bool = False,
    **options,
) -> tuple[list[Path], list[Path]]:
    """Encode each subject of ``inputs`` into ``<folder>/<subject>.npz``.

    Parameters
    ----------
    inputs, folder, rank, world_size
        See :func:`plan_subjects`.
    model : BundleAutoencoder or str or os.PathLike or None, optional
        See :func:`tractvq.encoding.resolve_model`.
    workers : int, optional
        Processes encoding subjects at once on this machine (this process alone for one).
    force : bool, optional
        Encode again subjects whose codes file exists, replacing it (else they are skipped).
    progress : bool, optional
        Show one progress bar over the subjects.
    **options
        Passed to :func:`tractvq.encoding.encode` (``reference``, ``batch_size``, ...).

    Returns
    -------
    written : list of pathlib.Path
        The codes files written.
    skipped : list of pathlib.Path
        The codes files that existed (not replaced).

    Raises
    ------
    TractvqError
        The first subject's error (the files written before it stay; the run can go on
        from there), or see :func:`plan_subjects`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    resolve_model(model)  # a bad model fails before any work
    jobs = plan_subjects(inputs, folder, rank=rank, world_size=world_size)
    skipped = [job.output for job in jobs if not force and job.output.is_file()]
    todo = [job for job in jobs if force or not job.output.is_file()]
    for job in todo:
        check_inside(job.output, folder)
        check_overwrite(job.output, force=force)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(folder, error) from error
    # Closed only on success: after an error the command line erases it (one error line).
    bar = tqdm(total=len(jobs), initial=len(skipped), desc="subjects", unit="subject", disable=not progress)
    if workers == 1 or len(todo) < 2:
        for job in todo:
            _encode_subject(job, model, force, options)
            bar.update()
    else:
        _encode_in_processes(todo, model, force, options, workers, bar)
    bar.close()
    return [job.output for job in todo], skipped


def _encode_subject(job: SubjectJob, model: ModelLike, force: bool, options: dict) -> None:
    """Encode one subject's files into its codes file."""
    encode(job.files, model, **options).save(job.output, force=force)


def _one_thread() -> None:
    """Worker start: one torch thread per process (``workers`` processes share the cores)."""
    import torch

    torch.set_num_threads(1)


def _encode_in_processes(jobs, model, force: bool, options: dict, workers: int, bar) -> None:
    """:func:`_encode_subject` for each job in ``workers`` fresh (spawned) processes; the
    first error is raised once the running jobs end, the others are not started."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_one_thread) as pool:
        pending = {pool.submit(_encode_subject, job, model, force, options) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [future.exception() for future in done if future.exception() is not None]
            if failed:
                for future in pending:
                    future.cancel()
                raise failed[0]
            bar.update(len(done))
