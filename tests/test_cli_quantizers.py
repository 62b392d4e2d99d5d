import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from tractvq.cli.main import cli
from tractvq.quantizers import available

NAMES = [name for name, _, _ in available()]


@pytest.fixture
def runner():
    return CliRunner()


def test_quantizers_lists_every_registered_name_with_its_paper(runner):
    result = runner.invoke(cli, ["quantizers"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "DESCRIPTION", "REFERENCE"]
    assert [line.split()[0] for line in lines[1:]] == NAMES
    for (name, description, reference), line in zip(available(), lines[1:]):
        assert description in line and line.endswith(reference)
    assert lines[1].split()[:2] == ["identity", "continuous"] and lines[3].split()[:2] == ["vq", "discrete"]


def test_quantizers_as_json(runner):
    listed = json.loads(runner.invoke(cli, ["quantizers", "--json"]).output)
    assert [entry["name"] for entry in listed] == NAMES
    assert {entry["kind"] for entry in listed} == {"discrete", "continuous"}
    assert listed[0] == {"name": "identity", "kind": "continuous", "description": available()[0][1], "reference": available()[0][2]}


def test_bench_quantizers_on_digits(runner, tmp_path):
    output = tmp_path / "bench"
    arguments = ["bench-quantizers", "--domain", "digits", "-q", "identity", "-q", "vq", "--steps", "3", "-o", str(output)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in output.iterdir()) == ["results.csv", "results.md", "results.png", "settings.json"]
    table = (output / "results.md").read_text()
    assert table in result.stdout and f"wrote {output}" in result.stdout
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["identity", "vq"]
    settings = json.loads((output / "settings.json").read_text())
    assert settings["quantizers"] == ["identity", "vq"] and settings["steps"] == 3 and settings["test_images"] == 359
    again = runner.invoke(cli, arguments)
    assert again.exit_code == 2 and "already exists; pass force=True (--force)" in again.stderr
    assert "identity" not in again.stderr  # refused before training


def test_bench_quantizers_on_a_cifar10_folder(runner, tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("data_batch_1", 8), ("test_batch", 4)):
        batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"labels": [0] * count}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    output = tmp_path / "bench"
    result = runner.invoke(cli, [
        "bench-quantizers", "--domain", "cifar10", "--data-dir", str(tmp_path), "-q", "fsq",
        "--steps", "2", "--batch-size", "4", "--dim", "8", "-o", str(output),
    ])
    assert result.exit_code == 0, result.output
    settings = json.loads((output / "settings.json").read_text())
    assert (settings["domain"], settings["train_images"], settings["test_images"]) == ("cifar10", 8, 4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-q", "vq", "-q", "nope"], "unknown quantizer 'nope'; choose from: " + ", ".join(NAMES)),
        (["--domain", "streamlines"], "--domain streamlines needs --data-dir, a training cache"),
        (["--option", "vq:beta=0.5"], "--option is for --domain streamlines only"),
        (["--option", "nope:beta=0.5"], "unknown quantizer 'nope'"),
        (["--option", "beta=0.5"], "expected QUANTIZER:KEY=VALUE, got 'beta=0.5'"),
        (["--domain", "streamlines", "--data-dir", "data/sample", "-q", "vq"], "data/sample"),
        (["--domain", "cifar10"], "--domain cifar10 needs --data-dir"),
        (["--domain", "digits", "--data-dir", "."], "--data-dir is for --domain cifar10 or streamlines, not digits"),
        (["--steps", "0"], "Invalid value for '--steps'"),
        (["-q", "vq", "--batch-size", "5000", "--steps", "1"], "batch_size must be at most the 1438 training images, got 5000"),
    ],
)
def test_bench_quantizers_usage_errors(runner, tmp_path, arguments, message):
    result = runner.invoke(cli, ["bench-quantizers", *arguments, "-o", str(tmp_path / "bench")])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "bench").exists()
