"""Encoding a study: one codes file per subject, resumable, in processes and torchrun ranks."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tractvq import encode
from tractvq.cli.main import cli
from tractvq.codes import Codes
from tractvq.errors import OutputError
from tractvq.study import encode_subjects, plan_subjects

SUBJECTS = ("sub-01", "sub-02", "sub-03")


@pytest.fixture
def root(tmp_path, sample_bundle):
    """A TractoInferno-style root of three subjects, each one real bundle."""
    for subject in SUBJECTS:
        folder = tmp_path / "root" / subject / "tractography"
        folder.mkdir(parents=True)
        shutil.copy(sample_bundle, folder / f"{subject}__POPT_R.trk")
    return tmp_path / "root"


def _assert_codes_of_each_subject(root, folder):
    """``folder`` holds exactly one codes file per subject, each the encoding of that subject alone."""
    assert sorted(path.name for path in folder.iterdir()) == [f"{subject}.npz" for subject in SUBJECTS]
    for subject in SUBJECTS:
        written, alone = Codes.load(folder / f"{subject}.npz"), encode(root / subject)
        assert [source.subject for source in written.layout.sources] == [subject]
        np.testing.assert_array_equal(written.latents, alone.latents)
        np.testing.assert_array_equal(written.layout.streamline_index, alone.layout.streamline_index)


def test_each_subject_gets_its_codes_file_and_a_second_run_skips_them(root, tmp_path):
    folder = tmp_path / "codes" / "deeper"
    written, skipped = encode_subjects(root, folder)
    assert (written, skipped) == ([folder / f"{subject}.npz" for subject in SUBJECTS], [])
    _assert_codes_of_each_subject(root, folder)
    (folder / "sub-02.npz").unlink()  # as if the run had stopped before it
    (folder / "sub-03.npz").write_bytes(b"kept: not encoded again")
    assert encode_subjects(root, folder) == ([folder / "sub-02.npz"], [folder / "sub-01.npz", folder / "sub-03.npz"])
    assert (folder / "sub-03.npz").read_bytes() == b"kept: not encoded again"
    assert encode_subjects(root, folder, force=True)[0] == [folder / f"{subject}.npz" for subject in SUBJECTS]
    _assert_codes_of_each_subject(root, folder)


def test_ranks_share_the_subjects_without_overlap(root, tmp_path):
    shares = [plan_subjects(root, tmp_path / "codes", rank=rank, world_size=2) for rank in range(2)]
    assert [[job.subject for job in share] for share in shares] == [["sub-01", "sub-03"], ["sub-02"]]
    assert shares[0][0].files == (root / "sub-01" / "tractography" / "sub-01__POPT_R.trk",)
    with pytest.raises(ValueError, match="rank must be in 0..1, got 2"):
        plan_subjects(root, tmp_path / "codes", rank=2, world_size=2)


def test_subject_names_are_made_safe_and_may_not_collide(tmp_path, sample_bundle):
    for subject in ("sub-a b", "sub-a?b"):
        (tmp_path / "root" / subject / "tractography").mkdir(parents=True)
        shutil.copy(sample_bundle, tmp_path / "root" / subject / "tractography" / f"{subject}__POPT_R.trk")
    (job,) = plan_subjects(tmp_path / "root" / "sub-a b", tmp_path / "codes")
    assert job.output == tmp_path / "codes" / "sub-a_b.npz"
    with pytest.raises(OutputError, match=r"codes: subjects 'sub-a b' and 'sub-a\?b' would both be written to sub-a_b.npz"):
        plan_subjects(tmp_path / "root", tmp_path / "codes")
    assert not (tmp_path / "codes").exists()


def test_the_cli_needs_per_subject_for_workers_and_ranks(root, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["encode", str(root), "-o", str(tmp_path / "codes.npz"), "--workers", "2"])
    assert result.exit_code == 2 and "add --per-subject" in result.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    result = runner.invoke(cli, ["encode", str(root), "-o", str(tmp_path / "codes"), "--per-subject"])
    assert result.exit_code == 2 and "RANK='2' and WORLD_SIZE='2' must be integers with 0 <= RANK < WORLD_SIZE" in result.output
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(cli, ["encode", str(root), "-o", str(tmp_path / "codes"), "--per-subject"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 codes file(s)" in result.output and "(share 2 of 2)" in result.output
    assert sorted(path.name for path in (tmp_path / "codes").iterdir()) == ["sub-02.npz"]
    assert not (tmp_path / "codes.npz").exists()


@pytest.mark.slow
def test_worker_processes_write_the_same_codes_and_report_a_bad_file_in_one_line(root, tmp_path):
    folder = tmp_path / "codes"
    result = CliRunner().invoke(cli, ["encode", str(root), "-o", str(folder), "--per-subject", "--workers", "2"])
    assert result.exit_code == 0, result.output
    _assert_codes_of_each_subject(root, folder)
    bad = root / "sub-04" / "tractography" / "sub-04__POPT_R.trk"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a tractogram")
    result = CliRunner().invoke(cli, ["encode", str(root), "-o", str(folder), "--per-subject", "--workers", "2"])
    assert result.exit_code == 2
    shown = [line.rsplit("\r", 1)[-1] for line in result.stderr.split("\n")]  # as a terminal shows it
    assert len(shown) == 2 and shown[1] == "", result.stderr  # the bar was erased: one line
    assert shown[0].startswith(f"Error: {bad}: cannot read this .trk file"), result.stderr
    assert not (folder / "sub-04.npz").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_torchrun_ranks_each_encode_their_share(root, tmp_path):
    folder = tmp_path / "codes"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "tractvq.cli.main", "encode", str(root), "-o", str(folder), "--per-subject",
    ]
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 codes file(s)" in result.stdout and "(share 1 of 2)" in result.stdout
    assert "wrote 1 codes file(s)" in result.stdout and "(share 2 of 2)" in result.stdout
    _assert_codes_of_each_subject(root, folder)
