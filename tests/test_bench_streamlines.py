"""The quantizer zoo on real bundles: ``tractvq bench-quantizers --domain streamlines``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tractvq.bench.streamlines import score_model, train_quantizer
from tractvq.buan import protocol
from tractvq.cache import load_cache, prepare
from tractvq.cli.main import cli
from tractvq.evaluate import run_model
from tractvq.models import load_model, preset_config
from tractvq.scoring import code_statistics, score_groups
from tractvq.training import RunConfigError, TrainConfig, TrainingInterrupted, train


@pytest.fixture(scope="module")
def cache(sample_root, tmp_path_factory):
    """Two real bundles (POPT_R, POPT_L: 8 groups), a third of the groups for validation."""
    folder = sample_root / "sub-vqdiff" / "tractography"
    sources = [folder / "sub-vqdiff__POPT_R.trk", folder / "sub-vqdiff__POPT_L.trk"]
    return prepare(sources, tmp_path_factory.mktemp("cache") / "cache", validation_fraction=0.34, progress=False)


def bench(runner, cache, output, *extra):
    arguments = ["bench-quantizers", "--domain", "streamlines", "--data-dir", str(cache), "-o", str(output),
                 "-q", "vq", "-q", "identity", "--steps", "2", "--batch-size", "4", "--threads", "1", "--quiet", *extra]
    return runner.invoke(cli, arguments)


def read_rows(output):
    with open(output / "results.csv", newline="") as handle:
        return {row["quantizer"]: row for row in csv.DictReader(handle)}


def test_bench_trains_each_quantizer_and_scores_validation_groups(cache, tmp_path):
    runner = CliRunner()
    output = tmp_path / "zoo"
    result = bench(runner, cache, output, "--option", "vq:commitment=0.5")
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    assert list(rows) == ["vq", "identity"]
    # 8 x 8 indices of 9 bits (K = 512) = 72 bytes; 8 x 8 x 16 float32 = 4,096 bytes
    assert (rows["vq"]["bytes_per_bundle"], rows["vq"]["bits_per_bundle"], rows["vq"]["discrete"]) == ("72", "576", "True")
    assert (rows["identity"]["bytes_per_bundle"], rows["identity"]["perplexity"]) == ("4096", "nan")
    assert int(rows["vq"]["groups"]) == int(load_cache(cache).validation.sum()) > 0
    model = load_model(output / "runs" / "vq" / "model.pt")
    assert model.config.bottleneck_options == {"commitment": 0.5}
    assert model.config.grouping == load_cache(cache).settings
    settings = json.loads((output / "settings.json").read_text())
    assert (settings["train_config"]["steps"], settings["quantizer_options"]) == (2, {"vq": {"commitment": 0.5}})
    assert "| vq | discrete | 72 |" in (output / "results.md").read_text()
    assert (output / "results.png").stat().st_size > 0


def test_resume_reuses_finished_runs_and_refuses_other_settings(cache, tmp_path):
    runner = CliRunner()
    output = tmp_path / "zoo"
    assert bench(runner, cache, output).exit_code == 0
    first = read_rows(output)
    checkpoint = output / "runs" / "vq" / "checkpoint.pt"
    written = checkpoint.stat().st_mtime_ns
    again = bench(runner, cache, output, "--resume")
    assert again.exit_code == 0, again.output
    assert checkpoint.stat().st_mtime_ns == written  # not trained again
    assert {name: row["mdf_mm"] for name, row in read_rows(output).items()} == {name: row["mdf_mm"] for name, row in first.items()}
    other = bench(runner, cache, output, "--resume", "--lr", "0.01")
    assert other.exit_code == 2
    assert "holds a run with other settings" in other.output
    refused = bench(runner, cache, output)
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert bench(runner, cache, output, "--force").exit_code == 0


def test_train_quantizer_finishes_a_stopped_run(cache, tmp_path):
    config = TrainConfig(steps=3, batch_size=4, seed=1, validate_every=1, checkpoint_every=1, device="cpu")
    model_config = preset_config("compact", bottleneck="fsq")
    run = tmp_path / "run"

    def stop_after_first_step(step, logs):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(cache, run, model_config, config, progress=False, callback=stop_after_first_step)
    assert not (run / "model.pt").exists()
    path = train_quantizer(cache, run, model_config, config)
    uninterrupted = train_quantizer(cache, tmp_path / "straight", model_config, config)
    resumed, straight = load_model(path), load_model(uninterrupted)
    for name, value in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[name].numpy(), value.numpy()), name
    with pytest.raises(RunConfigError, match="holds a run with other settings"):
        train_quantizer(cache, run, preset_config("compact", bottleneck="vq"), config)


def test_score_model_agrees_with_the_evaluation_functions(cache, tmp_path):
    config = TrainConfig(steps=2, batch_size=4, device="cpu")
    model = load_model(train_quantizer(cache, tmp_path / "run", preset_config("compact", bottleneck="vq"), config))
    groups = load_cache(cache).split("validation")
    scores = score_model(model, groups, threshold_mm=4.0, seed=3)
    reconstruction, indices = run_model(model, groups.data)
    paper = score_groups(groups, reconstruction, metrics=("buan", "mdf", "mse"), protocol=protocol("paper"), seed=3)
    millimetres = score_groups(groups, reconstruction, metrics=("buan",), protocol=protocol("mm", threshold=4.0), seed=3)
    assert scores["buan_paper"] == pytest.approx(paper.values["buan"].mean())
    assert scores["buan_mm"] == pytest.approx(millimetres.values["buan"].mean())
    assert scores["mdf_mm"] == pytest.approx(paper.values["mdf_mean"].mean())
    assert scores["mse"] == pytest.approx(paper.values["mse"].mean())
    assert scores["perplexity"] == pytest.approx(code_statistics(indices, 512)["perplexity"])
    assert scores["groups"] == len(groups)


def test_a_bad_option_fails_before_anything_is_written(cache, tmp_path):
    result = bench(CliRunner(), cache, tmp_path / "zoo", "--option", "vq:beta=0.5")
    assert result.exit_code == 2
    assert "quantizer 'vq' takes no option 'beta'; its options are: commitment, init" in result.output
    assert not (tmp_path / "zoo").exists()


def test_rate_distortion_scores_models_and_adds_benchmark_rows(cache, tmp_path):
    runner = CliRunner()
    zoo = tmp_path / "zoo"
    assert bench(runner, cache, zoo).exit_code == 0
    assert (zoo / "rate_distortion.png").stat().st_size > 0
    output = tmp_path / "rd"
    arguments = ["rate-distortion", str(cache), "-m", str(zoo / "runs" / "vq" / "model.pt"),
                 "--results", str(zoo / "results.csv"), "-o", str(output)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    with open(output / "rate_distortion.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["vq", "vq", "identity"]
    assert rows[0]["mdf_mm"] == read_rows(zoo)["vq"]["mdf_mm"]  # the same model scored the same way
    assert (output / "rate_distortion.png").stat().st_size > 0
    assert runner.invoke(cli, arguments).exit_code == 2  # exists: --force needed


def test_rate_distortion_refuses_other_csv_files(cache, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(cli, ["rate-distortion", str(cache), "--results", str(other), "-o", str(tmp_path / "rd")])
    assert result.exit_code == 2
    assert f"{other}: not a streamline benchmark's results.csv (missing quantizer" in result.output
    assert not (tmp_path / "rd").exists()
