"""tractvq.buan, tractvq.scoring and tractvq.evaluate: BUAN identical to DIPY's, MDF, tables, file pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dipy.segment.bundles import bundle_shape_similarity

from tractvq import io
from tractvq.buan import buan_scores, buan_scores_dipy, group_rng, protocol
from tractvq.bundles import PAPER_SETTINGS, GroupedBundles, GroupingSettings, group
from tractvq.errors import OutputError, TractogramError
from tractvq.evaluate import evaluate_reconstruction, model_label
from tractvq.scoring import code_statistics, score_groups, summarize

#: The published VQ-Diff arrays: in the project's workspace next to the repository, not in a clone.
PUBLISHED_ARRAYS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tractoinferno_subject"


@pytest.fixture(scope="module")
def groups(sample_bundle):
    pyt = sample_bundle.with_name("sub-vqdiff__PYT_R.trk")
    return GroupedBundles.concatenate([
        group(io.load(path), GroupingSettings(), name=path.stem.split("__")[1]) for path in (sample_bundle, pyt)
    ])


def _masked(groups, points):
    return [points[g][groups.mask[g]] for g in range(len(groups))]


@pytest.mark.parametrize("sigma, threshold", [(2.0, 6.0), (4.0, 5.0), (6.0, 6.0)])
def test_buan_is_identical_to_dipy_sequential_loop(groups, sigma, threshold):
    originals = _masked(groups, groups.denormalize())
    rng = np.random.default_rng(1)
    noisy = [o + rng.normal(0, sigma, o.shape) for o in originals]
    expected = buan_scores_dipy(originals, noisy, threshold=threshold, seed=7)
    assert np.array_equal(buan_scores(originals, noisy, threshold=threshold, seed=7), expected)
    assert np.array_equal(buan_scores(originals, noisy, threshold=threshold, seed=7, workers=2), expected)
    assert 0 < expected.mean() < 1


def test_buan_falls_back_to_dipy_near_the_threshold_and_on_duplicates(groups):
    original = groups.denormalize()[0][groups.mask[0]]
    duplicated = np.concatenate([original[:20], original[:5]])
    shifted = original + np.array([1.0, 0, 0])  # every distance is (close to) exactly 1 mm
    scores, fallbacks = buan_scores([original, duplicated], [shifted, duplicated + 0.5], threshold=1.0, seed=3,
                                    return_fallbacks=True)
    assert fallbacks == 2
    assert np.array_equal(scores, buan_scores_dipy([original, duplicated], [shifted, duplicated + 0.5], threshold=1.0, seed=3))


def test_buan_with_clustering_runs_dipy_per_group(groups):
    originals = _masked(groups, groups.denormalize())[:2]
    noisy = [o + 1.0 for o in originals]
    expected = [bundle_shape_similarity(list(o), list(r), group_rng(0, k), clust_thr=[5, 3, 1.5], threshold=6)
                for k, (o, r) in enumerate(zip(originals, noisy))]
    assert list(buan_scores(originals, noisy, threshold=6, clust_thr=(5, 3, 1.5), workers=1)) == expected


def test_identity_scores_one_and_zero(groups):
    scores = score_groups(groups, groups.data, metrics=["buan", "mdf", "mse"])
    assert np.all(scores.values["buan"] == 1.0)
    assert np.allclose(scores.values["mdf_mean"], 0, atol=1e-4) and np.allclose(scores.values["mse"], 0)


def test_a_3_mm_shift_has_an_mdf_of_3_mm(groups):
    shifted = groups.denormalize() + np.array([3.0, 0.0, 0.0])  # (G, S, P, 3) mm
    data = ((shifted - groups.offset[:, None, None, :]) / groups.scale[:, None, None, None]).transpose(0, 3, 1, 2)
    scores = score_groups(groups, data.astype(np.float32), metrics=["mdf"])
    assert np.allclose(scores.values["mdf_mean"], 3.0, atol=1e-3)
    assert np.allclose(scores.values["mdf_max"], 3.0, atol=1e-3)


def test_paper_protocol_is_the_published_hand_call(sample_bundle):
    settings = GroupingSettings(**{**PAPER_SETTINGS.__dict__, "minimum": -100.0, "maximum": 100.0})
    groups = group(io.load(sample_bundle), settings)
    rng = np.random.default_rng(0)
    reconstruction = (groups.data + rng.normal(0, 0.03, groups.data.shape)).astype(np.float32)
    scores = score_groups(groups, reconstruction, metrics=["buan"], protocol=protocol("paper"), seed=5)
    original, decoded = groups.data.transpose(0, 2, 3, 1), reconstruction.transpose(0, 2, 3, 1)
    expected = [
        bundle_shape_similarity(list(original[g][groups.mask[g]]), list(decoded[g][groups.mask[g]]), group_rng(5, g),
                                clust_thr=[0], threshold=0.05)
        for g in range(len(groups))
    ]
    assert list(scores.values["buan"]) == expected


def _synthetic_bundle(n_streamlines: int = 256) -> np.ndarray:
    """A bundle in the published arrays' layout ``(N, 3, 64)`` and units, within [-0.45, 0.33]
    (so that a range fitted to it is not the global one)."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 64)
    centre = np.stack([0.6 * t - 0.35, 0.15 * np.sin(np.pi * t), 0.1 * t - 0.05])  # (3, 64)
    bends = rng.normal(0, 0.04, (n_streamlines, 3, 1)) * np.sin(np.pi * t) + rng.normal(0, 0.03, (n_streamlines, 3, 1))
    return (centre + bends).astype(np.float32)


@pytest.fixture(params=["published", "synthetic"])
def paper_pair(request, tmp_path):
    """An original bundle in the published units and a noisy "reconstruction" of it, as arrays
    and as ``.npy`` files: the published MCP bundle (skipped without ../shared) or a built one."""
    if request.param == "published":
        if not PUBLISHED_ARRAYS.is_dir():
            pytest.skip(f"the published arrays are not here ({PUBLISHED_ARRAYS})")
        original = np.load(PUBLISHED_ARRAYS / "MCP.npy")
    else:
        original = _synthetic_bundle()
    reconstruction = (original + np.random.default_rng(1).normal(0, 0.02, original.shape)).astype(np.float32)
    paths = tmp_path / "original" / "MCP.npy", tmp_path / "reconstruction" / "MCP.npy"
    for path, array in zip(paths, (original, reconstruction)):
        path.parent.mkdir()
        np.save(path, array)
    return original, reconstruction, *paths


def _published_loop(original: np.ndarray, reconstruction: np.ndarray, seed: int) -> np.ndarray:
    """The published protocol by hand: DIPY on each 64-streamline group of the arrays as they are."""
    def streamlines(array, g):
        return list(array[64 * g:64 * (g + 1)].transpose(0, 2, 1))  # 64 x (64 points, 3)

    return np.array([
        bundle_shape_similarity(streamlines(original, g), streamlines(reconstruction, g), group_rng(seed, g),
                                clust_thr=[0], threshold=0.05)
        for g in range(len(original) // 64)
    ])


def test_paper_protocol_is_dipy_on_the_published_arrays_in_the_global_range(paper_pair):
    original, reconstruction, original_path, reconstruction_path = paper_pair
    expected = _published_loop(original, reconstruction, seed=3)
    assert 0.9 < expected.mean() < 1  # not saturated; in the bundle's own range it would score about 0.5
    _, scores = evaluate_reconstruction(original_path, reconstruction_path, metrics=["buan"], protocol=protocol("paper"),
                                        coordinate_range=(-100, 100), seed=3)
    np.testing.assert_allclose(scores["reconstruction"].values["buan"], expected, rtol=0, atol=1e-6)


def test_paper_protocol_refuses_to_guess_the_global_range(paper_pair):
    _, _, original_path, reconstruction_path = paper_pair
    with pytest.raises(ValueError, match="paper protocol .* give coordinate_range"):
        evaluate_reconstruction(original_path, reconstruction_path, protocol=protocol("paper"))


def test_table_csv_and_json_refuse_to_overwrite(groups, tmp_path):
    scores = score_groups(groups, groups.data, metrics=["buan", "mdf"])
    table = summarize({"identity": scores}, ["buan", "mdf"], settings={"seed": 0})
    assert table.rows == ["POPT_R", "PYT_R", "all"]
    assert table.value("all", "identity", "buan") == (1.0, 0.0)
    assert "POPT_R" in table.format()
    table.save_csv(tmp_path / "t.csv")
    table.save_json(tmp_path / "t.json")
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "bundle,model,metric,mean,std,count"
    assert json.loads((tmp_path / "t.json").read_text())["results"][0]["bundle"] == "POPT_R"
    with pytest.raises(OutputError):
        table.save_csv(tmp_path / "t.csv")
    table.save_csv(tmp_path / "t.csv", force=True)


def test_reconstruction_pair_and_mismatched_counts(sample_bundle):
    table, _ = evaluate_reconstruction(sample_bundle, sample_bundle, metrics=["buan", "mdf"])
    assert table.value("POPT_R", "reconstruction", "buan") == (1.0, 0.0)
    with pytest.raises(TractogramError, match="192 streamlines.*320"):
        evaluate_reconstruction(sample_bundle, sample_bundle.with_name("sub-vqdiff__PYT_R.trk"))


def test_code_statistics_count_only_the_codes_seen():
    indices = np.array([[0, 0, 1, 7], [7, 7, 7, 2]])  # counts 2, 1, 1, 4 of 8
    probabilities = np.array([2, 1, 1, 4]) / 8
    expected = float(np.exp(-(probabilities * np.log(probabilities)).sum()))
    small = code_statistics(indices, 8)
    assert small == pytest.approx({"perplexity": expected, "usage": 4 / 8})
    huge = code_statistics(indices + 2**35, 2**36)  # an FSQ grid of 12 channels x 8 levels
    assert huge == pytest.approx({"perplexity": expected, "usage": 4 / 2**36})


def test_model_labels_name_run_folders_and_stay_unique():
    assert model_label("runs/diveq/model.pt", []) == "diveq"
    assert model_label("model.pt", []) == "model"
    assert model_label("weights/vq.pt", ["vq"]) == "vq-2"
    assert model_label(None, []) == "default"
