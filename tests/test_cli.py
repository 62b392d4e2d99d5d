import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tractvq import __version__
from tractvq.cli.main import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_version_and_help(runner):
    assert runner.invoke(cli, ["--version"]).output.strip() == f"tractvq, version {__version__}"
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "info" in result.output and "prepare" in result.output


def test_help_imports_neither_torch_nor_dipy():
    code = "import sys; import tractvq.cli.main; print(sorted(m for m in ('torch', 'dipy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_info_lists_the_twelve_sample_bundles(runner, sample_root):
    result = runner.invoke(cli, ["info", str(sample_root)])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("sub-vqdiff")]) == 12
    listed = json.loads(runner.invoke(cli, ["info", "--json", str(sample_root)]).output)
    assert sorted(entry["bundle"] for entry in listed)[:3] == ["CC_Fr_1", "FPT_L", "FPT_R"]
    assert sum(entry["streamlines"] for entry in listed) == 12416


def test_info_of_a_tck_with_its_reference(runner, nibabel_data):
    result = runner.invoke(cli, ["info", str(nibabel_data / "standard.tck"), "--reference", str(nibabel_data / "standard.trk")])
    assert result.exit_code == 0, result.output
    assert "120" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["info", "{tmp}/missing.trk"], "missing.trk: no such file or folder"),
        (["info", "{nib}/standard.tck"], "standard.tck: .tck files carry no spatial reference"),
        (["info", "{nib}/no_header_end.tck", "-r", "{nib}/standard.trk"], "no_header_end.tck: cannot read this .tck file"),
        (["prepare", "{tmp}", "-o", "{tmp}/cache"], "no tractography found"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(runner, tmp_path, nibabel_data, arguments, message):
    arguments = [argument.format(tmp=tmp_path, nib=nibabel_data) for argument in arguments]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()


def test_verbose_shows_the_exception(runner, tmp_path):
    result = runner.invoke(cli, ["--verbose", "info", str(tmp_path / "missing.trk")])
    assert result.exit_code == 1 and type(result.exception).__name__ == "TractogramError"


def test_prepare_writes_a_cache_and_needs_force_to_replace_it(runner, sample_root, tmp_path):
    output = tmp_path / "cache"
    result = runner.invoke(cli, ["prepare", str(sample_root), "-o", str(output), "--grouping", "sequential"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["groups"] == 194 and manifest["settings"]["strategy"] == "sequential"
    again = runner.invoke(cli, ["prepare", str(sample_root), "-o", str(output)])
    assert again.exit_code == 2 and "already exists; pass force=True (--force)" in again.stderr
    forced = runner.invoke(cli, ["prepare", str(sample_root), "-o", str(output), "--force", "--paper", "--range", "-100", "100"])
    assert forced.exit_code == 0, forced.output
    settings = json.loads((output / "manifest.json").read_text())["settings"]
    assert settings == {"n_points": 64, "group_size": 64, "strategy": "sequential", "orient": False, "order": False,
                        "normalization": "global", "minimum": -100.0, "maximum": 100.0, "seed": 0}


def test_prepare_rejects_bad_option_values(runner, sample_root, tmp_path):
    result = runner.invoke(cli, ["prepare", str(sample_root), "-o", str(tmp_path / "c"), "--points", "1"])
    assert result.exit_code == 2 and "Invalid value for '--points': 1 is not in the range 2<=x<=4096." in result.stderr
