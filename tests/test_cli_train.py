import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tractvq.bundles import GroupingSettings
from tractvq.cache import prepare
from tractvq.cli.main import cli
from tractvq.models.checkpoint import load_checkpoint, save_checkpoint

#: The augmentation options added after the first three, all off.
OFF = {"scaling": 0.0, "shear": 0.0, "elastic_mm": 0.0, "jitter_mm": 0.0, "resampling": 0.0, "partial_groups": 0.0,
       "mixed_groups": 0.0}
TINY = [
    "--latent-dim", "8", "--codebook-size", "32", "--model-option", "channels=[8,16,16]",
    "--model-option", "hidden_channels=16", "--model-option", "residual_channels=8",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, sample_bundle):
    return prepare([sample_bundle], tmp_path_factory.mktemp("cache") / "cache", GroupingSettings(n_points=16, group_size=16), progress=False)


@pytest.fixture
def runner():
    return CliRunner()


def _train(runner, cache, run, *arguments):
    return runner.invoke(cli, ["train", str(cache), "-o", str(run), "--device", "cpu", "--threads", "1", "-q", *arguments])


def test_train_writes_a_run_then_resumes_it_with_more_steps(runner, cache, tmp_path):
    run = tmp_path / "run"
    arguments = [*TINY, "--steps", "2", "--batch", "4", "--validate-every", "1", "--bottleneck", "gumbel",
                 "--option", "temperature=2", "--option", "logits=linear", "--augment", "--seed", "3"]
    result = _train(runner, cache, run, *arguments)
    assert result.exit_code == 0, result.output
    assert "step=2 " in result.output and "val_mdf_mm=" in result.output and f"wrote {run}" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["bottleneck_options"] == {"temperature": 2, "logits": "linear"}
    assert config["model_config"]["channels"] == [8, 16, 16] and config["model_config"]["latent_dim"] == 8
    assert config["train_config"]["augmentation"] == {
        "rotation_degrees": 5.0, "translation_mm": 2.0, "streamline_dropout": 0.1, **OFF,
    }
    assert config["train_config"]["seed"] == 3

    again = _train(runner, cache, run, *arguments)
    assert again.exit_code == 2 and "is not empty; pass resume=True (--resume)" in again.stderr

    # as a checkpoint written before the newer augmentation options: it records the first three only
    old = load_checkpoint(run / "checkpoint.pt")
    old["train_config"]["augmentation"] = {"rotation_degrees": 5.0, "translation_mm": 2.0, "streamline_dropout": 0.1}
    save_checkpoint(old, run / "checkpoint.pt", force=True)
    resumed = _train(runner, cache, run, "--resume", "--steps", "3")
    assert resumed.exit_code == 0, resumed.output
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["step"] == 3 and checkpoint["train_config"]["seed"] == 3  # kept from the run
    assert checkpoint["train_config"]["augmentation"] == config["train_config"]["augmentation"]  # the rest off
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    changed = _train(runner, cache, run, "--resume", "--steps", "4", "--lr", "0.1")
    assert changed.exit_code == 2 and changed.stderr.count("\n") == 1
    assert "can only change" in changed.stderr and "lr (saved 0.0002, got 0.1)" in changed.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--option", "temperature"], "expected KEY=VALUE, got 'temperature'"),
        (["--bottleneck", "kmeans"], "unknown bottleneck 'kmeans'; choose one of: identity"),
        (["--option", "colour=1", "--batch", "4"], "takes no option 'colour'"),
        (["--steps", "0"], "Invalid value for '--steps': 0 is not in the range x>=1."),
        (["--resume", "--force"], "give --resume or --force, not both"),
        (["--scaling", "1"], "Invalid value for '--scaling': 1.0 is not in the range 0<=x<1."),
        (["--shear", "-0.1"], "Invalid value for '--shear'"),
        (["--elastic", "nan"], "Invalid value for '--elastic': 'nan' is not a finite number."),
        (["--jitter", "-1"], "Invalid value for '--jitter'"),
        (["--resampling", "1.5"], "Invalid value for '--resampling': 1.5 is not in the range 0<=x<=1."),
        (["--partial-groups", "inf"], "Invalid value for '--partial-groups'"),
        (["--mixed-groups", "-0.5"], "Invalid value for '--mixed-groups'"),
    ],
)
def test_bad_options_are_usage_errors(runner, cache, tmp_path, arguments, message):
    result = _train(runner, cache, tmp_path / "run", *TINY, *arguments)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


def test_augmentation_options_reach_the_training_config(runner, cache, tmp_path):
    options = ["--scaling", "0.1", "--shear", "0.05", "--elastic", "1", "--jitter", "0.2", "--resampling", "0.5",
               "--partial-groups", "0.25", "--mixed-groups", "0.1"]
    result = _train(runner, cache, tmp_path / "run", *TINY, "--steps", "1", "--batch", "4", "--augment", *options,
                    "--balance-bundles")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["balance_bundles"] is True
    assert config["train_config"]["augmentation"] == {
        "rotation_degrees": 5.0, "translation_mm": 2.0, "streamline_dropout": 0.1, "scaling": 0.1, "shear": 0.05,
        "elastic_mm": 1.0, "jitter_mm": 0.2, "resampling": 0.5, "partial_groups": 0.25, "mixed_groups": 0.1,
    }
    plain = _train(runner, cache, tmp_path / "plain", *TINY, "--steps", "1", "--batch", "4", *options)  # no --augment
    assert plain.exit_code == 0, plain.output
    plain_config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not any(plain_config["train_config"]["augmentation"].values())
    assert plain_config["train_config"]["balance_bundles"] is False


def test_missing_cache_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(cli, ["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2 and "nowhere: not a tractvq cache" in result.stderr
    assert result.stderr.count("\n") == 1


def test_interruption_exits_130_with_how_to_resume(runner, cache, tmp_path, monkeypatch):
    from tractvq import training

    def interrupted(*args, **kwargs):
        raise training.TrainingInterrupted(7, Path("run/checkpoint.pt"))

    monkeypatch.setattr(training, "train", interrupted)
    result = _train(runner, cache, tmp_path / "run", *TINY)
    assert result.exit_code == 130
    assert "interrupted after step 7; checkpoint saved to run/checkpoint.pt; continue with --resume" in result.stderr


@pytest.mark.parametrize("command", ["train", "bench-quantizers"])
def test_preset_choices_are_every_preset_name(command):
    from tractvq.models.config import PRESET_NAMES

    (preset,) = [option for option in cli.commands[command].params if option.name == "preset"]
    assert tuple(preset.type.choices) == PRESET_NAMES
