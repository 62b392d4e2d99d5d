"""``tractvq evaluate`` and ``tractvq perturb`` in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tractvq.buan import group_rng
from tractvq.cli.main import cli
from tractvq.models import BundleAutoencoder, preset_config, save_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "vq.pt"
    save_model(BundleAutoencoder(preset_config("compact", bottleneck="vq")), path)
    return path


def test_evaluate_models_side_by_side_with_csv_and_json(sample_bundle, model_file, tmp_path):
    runner = CliRunner()
    arguments = ["evaluate", str(sample_bundle), "-m", str(model_file), "-m", str(model_file),
                 "--metric", "buan", "--metric", "mdf", "--metric", "perplexity", "--metric", "usage",
                 "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json")]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert "vq:buan" in result.output and "vq-2:mdf_mean" in result.output and "POPT_R" in result.output
    assert json.loads((tmp_path / "t.json").read_text())["settings"]["protocol"] == "mm"
    again = runner.invoke(cli, arguments)
    assert again.exit_code == 2 and "already exists" in again.output


def test_evaluate_pair_and_mismatched_counts(sample_bundle):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(sample_bundle), str(sample_bundle), "--protocol", "paper", "--range", "-100", "100"])
    assert result.exit_code == 0, result.output
    assert "1.00000 ± 0.00000" in result.output and "threshold 0.05" in result.output
    other = sample_bundle.with_name("sub-vqdiff__PYT_R.trk")
    result = runner.invoke(cli, ["evaluate", str(sample_bundle), str(other)])
    assert result.exit_code == 2 and "192 streamlines" in result.output and "320" in result.output


def test_evaluate_paper_protocol_is_dipy_in_the_given_global_range(tmp_path):
    from dipy.segment.bundles import bundle_shape_similarity

    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 64)
    centre = np.stack([0.6 * t - 0.35, 0.15 * np.sin(np.pi * t), 0.1 * t])  # (3, 64), published units
    original = (centre + rng.normal(0, 0.03, (128, 3, 1))).astype(np.float32)  # (N, 3, 64)
    reconstruction = (original + rng.normal(0, 0.02, original.shape)).astype(np.float32)
    np.save(tmp_path / "original.npy", original)
    np.save(tmp_path / "reconstruction.npy", reconstruction)
    expected = np.mean([
        bundle_shape_similarity(list(original[64 * g:64 * (g + 1)].transpose(0, 2, 1)),
                                list(reconstruction[64 * g:64 * (g + 1)].transpose(0, 2, 1)), group_rng(0, g),
                                clust_thr=[0], threshold=0.05)
        for g in range(2)
    ])
    assert 0.9 < expected < 1
    runner = CliRunner()
    arguments = ["evaluate", str(tmp_path / "original.npy"), str(tmp_path / "reconstruction.npy"), "--protocol", "paper"]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 2 and "give --range MIN MAX in mm" in result.output
    result = runner.invoke(cli, [*arguments, "--range", "-100", "100", "--json", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    buan = json.loads((tmp_path / "t.json").read_text())["results"][0]
    assert buan["metric"] == "buan" and buan["mean"] == pytest.approx(expected, rel=0, abs=1e-6)


def test_evaluate_cache_refuses_a_range(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "-m", "default", "--range", "-100", "100"])
    assert result.exit_code == 2 and "--range does not apply to a cache" in result.output


def test_evaluate_codes_file_as_reconstruction(sample_bundle, model_file, tmp_path):
    runner = CliRunner()
    codes = tmp_path / "codes.npz"
    assert runner.invoke(cli, ["encode", str(sample_bundle), "-m", str(model_file), "-o", str(codes)]).exit_code == 0
    result = runner.invoke(cli, ["evaluate", str(sample_bundle), str(codes), "--metric", "mdf", "--metric", "usage"])
    assert result.exit_code == 0, result.output
    assert "usage" in result.output and "POPT_R" in result.output


def test_perturb_writes_table_curve_and_bundles(sample_bundle, model_file, tmp_path):
    runner = CliRunner()
    output = tmp_path / "perturb"
    arguments = ["perturb", str(sample_bundle), "-m", str(model_file), "--eps", "0", "--eps", "0.5",
                 "--no-directional", "-o", str(output)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    for name in ("perturbation.csv", "perturbation.json", "perturbation.png", "permutation.csv"):
        assert (output / name).is_file()
    assert sorted(p.name for p in (output / "decoded").iterdir()) == ["gaussian_0", "gaussian_0p5"]
    assert runner.invoke(cli, arguments).exit_code == 2
