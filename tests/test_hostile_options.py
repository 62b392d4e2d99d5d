"""Bad option values are usage errors at parse time (issue 13, class 7).

Each bad value of each numeric or choice option of each command must end the command with
exit status 2 and one ``Error:`` line that names the option and the value (click's usage
error: ``Usage:`` and ``Try ...`` lines above it, no traceback), before anything is read,
built or written.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
from dataclasses import fields

import pytest
import torch
from click.testing import CliRunner

from tractvq.bundles import GroupingSettings
from tractvq.cache import prepare
from tractvq.cli.main import cli
from tractvq.cli.options import MODEL_OPTION_ELSEWHERE, MODEL_OPTION_SIZES
from tractvq.models.config import ModelConfig

# The library functions each command would go on to call: none may run.
EXPENSIVE = [
    ("tractvq.encoding", "encode"), ("tractvq.encoding", "decode"), ("tractvq.encoding", "reconstruct"),
    ("tractvq.encoding", "resolve_model"), ("tractvq.codes.Codes", "load"), ("tractvq.cache", "prepare"),
    ("tractvq.cache", "load_cache"), ("tractvq.training", "train"), ("tractvq.evaluate", "evaluate_models"),
    ("tractvq.evaluate", "evaluate_reconstruction"), ("tractvq.robustness", "perturbation_study"),
    ("tractvq.bench", "run_benchmark"), ("tractvq.bench.streamlines", "run_streamline_benchmark"),
]

ENCODE = ["encode", "{bundle}", "-o", "{tmp}/codes.npz"]
DECODE = ["decode", "{tmp}/codes.npz", "-o", "{tmp}/decoded"]
RECONSTRUCT = ["reconstruct", "{bundle}", "-o", "{tmp}/recon.trk"]
EVALUATE = ["evaluate", "{bundle}", "{bundle}"]
PERTURB = ["perturb", "{bundle}", "-o", "{tmp}/perturb"]
LATENT_MAP = ["latent-map", "{bundle}", "-o", "{tmp}/map.png"]
PREPARE = ["prepare", "{sample}", "-o", "{tmp}/cache"]
TRAIN = ["train", "{tmp}/cache", "-o", "{tmp}/run"]
BENCH = ["bench-quantizers", "-o", "{tmp}/bench"]
RATE_DISTORTION = ["rate-distortion", "{sample}", "-m", "default", "-o", "{tmp}/rd"]
RENDER = ["render", "{bundle}", "-o", "{tmp}/render.png"]

MODEL_COMMANDS = {"encode": ENCODE, "decode": DECODE, "reconstruct": RECONSTRUCT, "evaluate": EVALUATE,
                  "perturb": PERTURB, "latent-map": LATENT_MAP}
RANGE_COMMANDS = {name: MODEL_COMMANDS[name] for name in ("encode", "reconstruct", "evaluate", "perturb", "latent-map")}


def _cases():
    """``(command line, option, text the error line shows for the value)``, every case."""
    cases = []

    def add(command, option, values, shown=None):
        for value in values:
            arguments = value.split() if option == "--range" else [value]
            cases.append(pytest.param([*command, option, *arguments], option, shown or value,
                                      id=f"{command[0]} {option} {value}"))

    for command in MODEL_COMMANDS.values():
        add(command, "--batch-size", ["0", "-1", "-64"])
    for command in [*RANGE_COMMANDS.values(), PREPARE]:
        for value in ["5 5", "10 -10", "1 1.0"]:
            add(command, "--range", [value], "MIN must be below MAX")
        for value in ["nan nan", "nan 1", "0 inf", "-inf 0"]:
            add(command, "--range", [value], "is not a finite number")
    add(PREPARE, "--validation-fraction", ["2", "1", "-0.1", "nan", "inf"])
    add(PREPARE, "--mm-per-unit", ["nan", "0", "-1", "inf"])
    add(PREPARE, "--points", ["1", "0", "100000"])
    add(PREPARE, "--group-size", ["0", "100000"])
    add(PREPARE, "--seed", ["-1", "4294967296"])
    add(TRAIN, "--batch", ["0", "-5"])
    add(TRAIN, "--steps", ["0", "-1"])
    add(TRAIN, "--lr", ["0", "-1", "nan", "inf"])
    add(TRAIN, "--warmup", ["-1"])
    add(TRAIN, "--weight-decay", ["-0.1", "nan", "inf"])
    add(TRAIN, "--grad-clip", ["0", "nan", "inf"])
    add(TRAIN, "--seed", ["-1", "4294967296"])
    add(TRAIN, "--validate-every", ["0"])
    add(TRAIN, "--checkpoint-every", ["0"])
    add(TRAIN, "--rotation", ["181", "-1", "nan"])
    add(TRAIN, "--translation", ["-1", "inf"])
    add(TRAIN, "--dropout", ["1", "-0.5", "nan"])
    add(TRAIN, "--threads", ["0", "100000"])
    add(TRAIN, "--codebook-size", ["1", "100000000"])
    add(TRAIN, "--latent-dim", ["0", "100000"])
    add(TRAIN, "--model-option", [
        "channels=[0]", "channels=[100000]", "channels=[]", "channels=[1,2,3,4,5,6,7,8,9]", "channels=16",
        "channels=[8.5]", "codebook_size=1", "codebook_size=1000000000", "hidden_channels=-1",
        "hidden_channels=true", "residual_channels=\"wide\"", "residual_blocks=1000", "latent_dim=0",
        "layout=ring", "bottleneck=vq", "preset=paper", "grouping=null", "colour=1",
    ])
    add(BENCH, "--lr", ["nan", "inf"])
    add(BENCH, "--threshold", ["nan", "inf"])
    add(BENCH, "--seed", ["-1"])
    add(BENCH, "--codebook-size", ["100000"])
    add(BENCH, "--dim", ["100000"])
    add(BENCH, "--threads", ["100000"])
    add(EVALUATE, "--threshold", ["0", "-1", "nan", "inf"])
    add(EVALUATE, "--clust-thr", ["-1", "nan"])
    add(EVALUATE, "--seed", ["-1"])
    add(EVALUATE, "--workers", ["0", "-2", "100000"])
    add(PERTURB, "--eps", ["-0.1", "nan", "inf"])
    add(PERTURB, "--threshold", ["0", "nan"])
    add(PERTURB, "--seed", ["-1"])
    add(PERTURB, "--workers", ["0"])
    add(LATENT_MAP, "--seed", ["-1"])
    add(RATE_DISTORTION, "--threshold", ["nan", "inf"])
    add(RATE_DISTORTION, "--seed", ["-1"])
    add(RENDER, "--error-max", ["inf"])
    add(PREPARE, "--holdout-bundle", ["NOPE", "popt_r", ""], "among the sources; their bundles are: CC_Fr_1, FPT_L")
    return cases


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def imported():
    """Every tractvq module imported first, so none binds a stand-in by ``from ... import``."""
    import tractvq

    for module in pkgutil.walk_packages(tractvq.__path__, "tractvq."):
        with contextlib.suppress(ImportError):  # the viz extra may be missing
            importlib.import_module(module.name)


@pytest.fixture
def expensive(monkeypatch, imported):
    """Replace the library's work by a stand-in that records calls (and fails the command)."""
    calls = []

    def stand_in(name):
        def ran(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran")
        return ran

    for module, name in EXPENSIVE:
        monkeypatch.setattr(f"{module}.{name}", stand_in(name))
    return calls


def error_line(result) -> str:
    """The one ``Error:`` line of a usage error (exit status 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _format(arguments, tmp_path, sample_root, sample_bundle):
    return [argument.format(tmp=tmp_path, sample=sample_root, bundle=sample_bundle) for argument in arguments]


@pytest.mark.parametrize(("arguments", "option", "shown"), _cases())
def test_a_bad_option_value_is_a_usage_error_before_any_work(
    runner, expensive, tmp_path, sample_root, sample_bundle, arguments, option, shown
):
    result = runner.invoke(cli, _format(arguments, tmp_path, sample_root, sample_bundle))
    line = error_line(result)
    assert f"Invalid value for '{option}'" in line and shown in line
    assert expensive == [] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no CUDA device")
@pytest.mark.parametrize("arguments", [*MODEL_COMMANDS.values(), TRAIN], ids=lambda arguments: arguments[0])
def test_cuda_is_refused_where_torch_sees_none(runner, expensive, tmp_path, sample_root, sample_bundle, arguments):
    result = runner.invoke(cli, _format([*arguments, "--device", "cuda"], tmp_path, sample_root, sample_bundle))
    line = error_line(result)
    assert "Invalid value for '--device': 'cuda': torch sees no CUDA device" in line
    assert expensive == [] and list(tmp_path.iterdir()) == []


def test_model_options_cover_every_model_config_field():
    assert {*MODEL_OPTION_SIZES, *MODEL_OPTION_ELSEWHERE, "layout"} == {item.name for item in fields(ModelConfig)}


@pytest.fixture(scope="module")
def tiny_cache(sample_bundle, tmp_path_factory):
    """POPT_R in groups of 16: 12 groups, one of them for validation."""
    folder = tmp_path_factory.mktemp("cache") / "cache"
    return prepare([sample_bundle], folder, GroupingSettings(n_points=16, group_size=16), progress=False)


def _training_groups(cache) -> int:
    manifest = json.loads((cache / "manifest.json").read_text())
    return manifest["groups"] - manifest["validation_groups"]


def test_a_batch_larger_than_the_training_split_is_refused_before_the_model_is_built(
    runner, monkeypatch, tiny_cache, tmp_path
):
    def built(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr("tractvq.models.autoencoder.BundleAutoencoder", built)
    result = runner.invoke(cli, ["train", str(tiny_cache), "-o", str(tmp_path / "run"), "--batch", "100000", "-q"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {tiny_cache}: the batch size 100000 is more than the {_training_groups(tiny_cache)} groups of"
        " the training split; give at most that (--batch)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_bench_refuses_a_batch_larger_than_the_training_split(runner, monkeypatch, tiny_cache, tmp_path):
    calls = []
    monkeypatch.setattr("tractvq.bench.streamlines.run_streamline_benchmark", lambda *args, **kwargs: calls.append(1))
    batch = _training_groups(tiny_cache) + 1
    result = runner.invoke(cli, ["bench-quantizers", "--domain", "streamlines", "--data-dir", str(tiny_cache),
                                 "-q", "vq", "--batch-size", str(batch), "-o", str(tmp_path / "bench")])
    line = error_line(result)
    assert f"Invalid value for '--batch-size': {batch} is more than the {batch - 1} groups of the training split" in line
    assert calls == [] and list(tmp_path.iterdir()) == []
