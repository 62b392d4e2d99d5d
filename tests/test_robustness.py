"""tractvq.robustness: latent perturbations, permutation, held-out bundles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tractvq import io
from tractvq.bundles import group
from tractvq.cache import load_cache, prepare
from tractvq.evaluate import run_model
from tractvq.models import BundleAutoencoder, preset_config
from tractvq.robustness import (
    PUBLISHED_ALPHAS,
    decode_latents,
    encode_latents,
    generalisation_study,
    permutation_study,
    perturbation_study,
    plot_perturbation,
)
from tractvq.scoring import score_groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BundleAutoencoder(preset_config("compact", bottleneck="vq")).eval()


@pytest.fixture(scope="module")
def groups(sample_bundle, model):
    return group(io.load(sample_bundle), model.config.grouping, name="POPT_R")


def test_eps_0_and_alpha_0_are_the_plain_reconstruction(groups, model, tmp_path):
    plain, _ = run_model(model, groups.data)
    assert np.allclose(decode_latents(model, encode_latents(model, groups.data)), plain, atol=1e-6)
    result = perturbation_study(groups, model, [0.0, 1.0], alphas=PUBLISHED_ALPHAS, seed=0)
    assert len(result.records) == 2 + 9
    assert np.array_equal(result.reconstructions[("gaussian", 0.0)], result.reconstructions[("directional", 0.0)])
    assert np.allclose(result.reconstructions[("gaussian", 0.0)], plain, atol=1e-6)
    expected = score_groups(groups, plain).values["buan"].mean()
    assert result.records[0]["buan_mean"] == pytest.approx(expected)
    assert not np.allclose(result.reconstructions[("gaussian", 1.0)], plain)
    plot_perturbation(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_permutation_report(groups, model):
    table, change = permutation_study(groups, model, seed=0)
    assert [model for model, _ in table.columns] == ["ordered"] * 3 + ["permuted"] * 3
    assert set(change) == {"POPT_R", "all"} and set(change["all"]) == {"buan", "mdf_mean", "mdf_max"}


def test_holdout_bundles_are_validation_and_reported_apart(sample_bundle, model, tmp_path):
    pyt = sample_bundle.with_name("sub-vqdiff__PYT_R.trk")
    cache_path = prepare([sample_bundle, pyt], tmp_path / "cache", model.config.grouping, holdout_bundles=["PYT_R"],
                         validation_fraction=0.34, progress=False)
    cache = load_cache(cache_path)
    held = np.asarray(cache.bundle_names)[cache.bundle_labels] == "PYT_R"
    assert cache.validation[held].all() and cache.validation[~held].sum() == 1
    assert cache.manifest["split"]["holdout_bundles"] == ["PYT_R"]
    table = generalisation_study(cache, [model])
    assert "PYT_R (held out)" in table.rows and "held-out bundles" in table.rows
    plain = load_cache(prepare([sample_bundle, pyt], tmp_path / "plain", model.config.grouping,
                               validation_fraction=0.34, progress=False))
    assert "held-out bundles" not in generalisation_study(plain, [model]).rows  # nothing held out
    with pytest.raises(ValueError, match="NOPE"):
        prepare([sample_bundle], tmp_path / "other", holdout_bundles=["NOPE"], progress=False)
