import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from tractvq.bundles import GroupingSettings
from tractvq.cache import prepare
from tractvq.data import Augmentation
from tractvq.errors import OutputError
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.checkpoint import load_checkpoint, load_model
from tractvq.models.config import preset_config
from tractvq.quantizers import available
from tractvq.training import (
    METRIC_COLUMNS,
    RunConfigError,
    TrainConfig,
    TrainingInterrupted,
    resolve_device,
    train,
)
from tractvq.training.config import LearningRateSchedule

TINY = {"channels": (8, 16, 16), "hidden_channels": 16, "residual_channels": 8, "latent_dim": 8, "codebook_size": 32}
#: Four steps with everything on: warm-up, cosine, clipping, augmentation, a stochastic
#: bottleneck (VQ-Diff's Gumbel noise), validation at 2 and 4, a checkpoint at 3.
CONFIG = TrainConfig(
    steps=4, batch_size=4, lr=1e-3, warmup_steps=1, grad_clip=1.0, validate_every=2, checkpoint_every=3,
    augmentation=Augmentation(rotation_degrees=5, streamline_dropout=0.2), device="cpu", num_threads=1,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and lose much on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(bottleneck="vqdiff"):
    return preset_config("compact", bottleneck=bottleneck, **TINY)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, sample_bundle):
    """12 groups of 16 streamlines of 16 points: 11 for training, 1 for validation."""
    return prepare([sample_bundle], tmp_path_factory.mktemp("cache") / "cache", GroupingSettings(n_points=16, group_size=16), progress=False)


@pytest.fixture(scope="module")
def uninterrupted(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    metrics = train(cache, run, tiny_model(), CONFIG, progress=False)
    return run, metrics


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _state(path):
    return load_checkpoint(path)["state_dict"]


def test_run_folder_holds_checkpoint_model_metrics_and_curves(uninterrupted):
    run, metrics = uninterrupted
    assert sorted(path.name for path in run.iterdir()) == sorted(
        ["checkpoint.pt", "model.pt", "metrics.jsonl", "metrics.csv", "curves.png", "config.json"]
    )
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(row["step"]) for row in rows] == [2, 4]
    jsonl = _rows(run)
    assert jsonl[-1] == metrics and metrics["step"] == 4
    for key in ("train_loss", "val_mse", "val_mdf_mm", "val_perplexity", "val_usage", "lr"):
        assert isinstance(metrics[key], float) and metrics[key] >= 0, key
    assert 0 < metrics["val_mdf_mm"] < 100 and 1 <= metrics["val_perplexity"] <= 32
    model, extra = load_model(run / "model.pt", return_extra=True)
    assert extra["metrics"] == metrics and extra["step"] == 4
    assert model.config.grouping == GroupingSettings(n_points=16, group_size=16)  # the cache's
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["step"] == 4 and checkpoint["train_config"] == CONFIG.to_dict()
    assert len(checkpoint["rng"]) == 1 and checkpoint["rng"][0]["cpu"].dtype == torch.uint8
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "model_config"}
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_and_resumed_run_ends_with_the_same_weights(uninterrupted, cache, tmp_path):
    run = tmp_path / "interrupted"

    def ctrl_c_after_step_2(step, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: a flag, honoured before step 3

    with pytest.raises(TrainingInterrupted) as interrupted:
        train(cache, run, tiny_model(), CONFIG, progress=False, callback=ctrl_c_after_step_2)
    assert interrupted.value.step == 2 and interrupted.value.checkpoint == run / "checkpoint.pt"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2 and not (run / "model.pt").exists()
    assert [row["step"] for row in _rows(run)] == [2]

    metrics = train(cache, run, resume=True, progress=False)
    reference, resumed = _state(uninterrupted[0] / "model.pt"), _state(run / "model.pt")
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    strip = lambda rows: [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]
    assert strip(_rows(run)) == strip(_rows(uninterrupted[0]))
    assert strip([metrics]) == strip([uninterrupted[1]])
    assert "exp_avg" in str(load_checkpoint(run / "checkpoint.pt")["optimizer"]["state"][0].keys())


def test_keyboard_interrupt_from_a_callback_saves_a_checkpoint(cache, tmp_path):
    run = tmp_path / "run"

    def interrupt(step, logs):
        raise KeyboardInterrupt

    config = replace(CONFIG, steps=2)
    with pytest.raises(KeyboardInterrupt):
        train(cache, run, tiny_model("vq-ema"), config, progress=False, callback=interrupt)
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["step"] == 1 and checkpoint["model_config"]["bottleneck"] == "vq-ema"
    assert (run / "metrics.csv").read_text().splitlines() == [",".join(METRIC_COLUMNS)]
    metrics = train(cache, run, resume=True, progress=False)
    assert metrics["step"] == 2 and (run / "model.pt").is_file()


def test_a_run_folder_is_not_reused_without_resume_or_force(cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not empty; pass resume=True"):
        train(cache, run, tiny_model(), CONFIG, progress=False)
    with pytest.raises(OutputError, match="has no checkpoint.pt to resume from"):
        train(cache, run, resume=True, progress=False)
    with pytest.raises(ValueError, match="resume or force, not both"):
        train(cache, run, tiny_model(), CONFIG, resume=True, force=True, progress=False)
    (run / "metrics.jsonl").write_text('{"step": 99}\n')
    train(cache, run, tiny_model(), replace(CONFIG, steps=1), force=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine"  # force replaces run files only
    assert [row["step"] for row in _rows(run)] == [1]


def test_resume_refuses_other_settings_or_another_cache(uninterrupted, tmp_path, sample_bundle):
    run = uninterrupted[0]
    with pytest.raises(RunConfigError, match=r"can only change .*lr \(saved 0.001, got 0.01\)"):
        train(_cache_of(run), run, train_config=replace(CONFIG, lr=0.01), resume=True, progress=False)
    with pytest.raises(RunConfigError, match="differs from the checkpoint's"):
        train(_cache_of(run), run, tiny_model("vq"), resume=True, progress=False)
    other = prepare([sample_bundle], tmp_path / "other", GroupingSettings(n_points=16, group_size=32), progress=False)
    with pytest.raises(RunConfigError, match="not the cache this run was trained on"):
        train(other, run, resume=True, progress=False)


def _cache_of(run):
    return json.loads((run / "config.json").read_text())["cache"]


def test_a_finished_run_resumed_with_more_steps_goes_on(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "longer"
    shutil.copytree(uninterrupted[0], run)
    metrics = train(_cache_of(uninterrupted[0]), run, train_config=replace(CONFIG, steps=5), resume=True, progress=False)
    assert metrics["step"] == 5 and [row["step"] for row in _rows(run)] == [2, 4, 5]


def test_model_that_cannot_take_the_cache_groups(cache, tmp_path):
    config = preset_config("compact-grid", **{**TINY, "channels": (8, 16, 16, 16, 16)})  # needs multiples of 32
    with pytest.raises(RunConfigError, match="cannot take this cache's groups.*multiple of 32"):
        train(cache, tmp_path / "run", config, CONFIG, progress=False)


def test_learning_rate_schedule():
    cosine = LearningRateSchedule(TrainConfig(steps=11, warmup_steps=2, final_lr_fraction=0.1))
    assert [cosine(step) for step in (0, 1)] == [0.5, 1.0]
    assert cosine(2) == pytest.approx(1.0) and cosine(11) == pytest.approx(0.1) and cosine(50) == pytest.approx(0.1)
    assert cosine(2 + 9 // 2) < 1 and cosine(6) == pytest.approx(0.55 + 0.45 * torch.cos(torch.tensor(torch.pi * 4 / 9)).item())
    constant = LearningRateSchedule(TrainConfig(lr_schedule="constant"))
    assert constant(0) == constant(10_000) == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"lr": -1.0}, "lr must be a positive number, got -1.0"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of cosine, constant, got 'step'"),
        ({"grad_clip": 0.0}, "grad_clip must be positive or None, got 0.0"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
        ({"augmentation": {"streamline_dropout": 2}}, "streamline_dropout must be in"),
        ({"augmentation": {"rotation": 5}}, r"unknown augmentation key\(s\) 'rotation'; the keys are: elastic_mm"),
        # only Python ints: a NumPy integer would pass here and fail when config.json is written
        ({"steps": np.int64(4)}, "steps must be an integer >= 1, got np.int64"),
    ],
)
def test_train_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_train_config_round_trips_through_a_dict():
    assert TrainConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert json.loads(json.dumps(CONFIG.to_dict()))["augmentation"]["rotation_degrees"] == 5
    with pytest.raises(ValueError, match=r"unknown training config key\(s\) 'epochs'; the keys are: augmentation"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="training config must be a mapping of TrainConfig fields, got list"):
        TrainConfig.from_dict([("steps", 3)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_refused():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize("bottleneck", [name for name, _, _ in available()])
def test_every_bottleneck_uses_all_its_parameters(bottleneck):
    """What lets DDP run with ``find_unused_parameters=False``."""
    model = BundleAutoencoder(replace(tiny_model(bottleneck), grouping=GroupingSettings(n_points=16, group_size=16)))
    groups = torch.randn(2, 3, 16, 16)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(groups, model(groups))
        loss.backward()
        assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []


def test_two_processes_with_gloo(cache, tmp_path):
    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "--no-python",
        sys.executable, "-c", "from tractvq.cli.main import main; main()",
        "train", str(cache), "-o", str(run), "--steps", "3", "--batch", "4", "--validate-every", "1",
        "--device", "cpu", "--quiet", "--bottleneck", "vq-ema", "--latent-dim", "8", "--codebook-size", "32",
        "--model-option", "channels=[8,16,16]", "--model-option", "hidden_channels=16",
        "--model-option", "residual_channels=8",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("wrote") == 1  # rank 0 alone reports
    rows = _rows(run)
    assert [row["step"] for row in rows] == [1, 2, 3]
    # the two shards are the global batch: the first loss (initial weights) is the one of a
    # single process on the whole batch
    single = train(cache, tmp_path / "single", tiny_model("vq-ema"), TrainConfig(steps=1, batch_size=4, device="cpu"), progress=False)
    assert rows[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
    assert rows[0]["train_loss"] != rows[1]["train_loss"]
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["cpu"], checkpoint["rng"][1]["cpu"])  # own noise per rank
    assert load_model(run / "model.pt").config.bottleneck == "vq-ema"
