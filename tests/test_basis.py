"""The basis preset: fitted linear codes, exact on data in the bases' span, FSQ as a uniform
quantizer, fitted by training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tractvq.bundles import GroupingSettings
from tractvq.cache import prepare
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.basis import fit_bases
from tractvq.models.checkpoint import load_model
from tractvq.models.config import preset_config
from tractvq.quantizers import build
from tractvq.training import TrainConfig, train

GROUPING = GroupingSettings(n_points=8, group_size=4)


def small_model(**overrides) -> BundleAutoencoder:
    return BundleAutoencoder(preset_config("basis", latent_dim=4, grouping=GROUPING, **overrides)).eval()


def groups_in_span(rng: np.random.Generator, count: int) -> np.ndarray:
    """Groups (G, 3, S, P) whose means lie in a 4-dim and whose differences from the mean
    lie in a 3-dim subspace: exactly what a basis model of latent_dim 4, S 4 can code."""
    width = 3 * GROUPING.n_points
    directions, _ = np.linalg.qr(rng.normal(size=(width, 7)))  # (24, 7) orthonormal
    centre = rng.normal(size=width)
    means = centre + rng.normal(size=(count, 4)) @ directions[:, :4].T  # (G, 24)
    offsets = rng.normal(size=(count, GROUPING.group_size, 3)) @ directions[:, 4:].T  # (G, S, 24)
    offsets -= offsets.mean(axis=1, keepdims=True)  # the group mean is the mean
    streamlines = means[:, None] + offsets  # (G, S, 3P) as x..., y..., z...
    return streamlines.reshape(count, GROUPING.group_size, 3, GROUPING.n_points).transpose(0, 2, 1, 3)


def test_untrained_model_is_the_linear_codec_and_exact_on_its_span():
    rng = np.random.default_rng(0)
    groups = groups_in_span(rng, 40)
    model = small_model()
    fit_bases(model, groups, np.ones((40, GROUPING.group_size), dtype=bool))
    first = torch.from_numpy(groups[:5]).float()
    with torch.no_grad():
        output = model(first)
    assert torch.allclose(output.reconstruction, first, atol=1e-4)
    assert output.quantizer_output.quantized.shape == (5, GROUPING.group_size, 1, 4)


def test_reconstruction_is_the_projection_onto_the_bases():
    rng = np.random.default_rng(1)
    groups = rng.normal(size=(30, 3, GROUPING.group_size, GROUPING.n_points))
    model = small_model()
    fit_bases(model, groups, np.ones((30, GROUPING.group_size), dtype=bool))
    codec = model.encoder.codec
    streamlines = groups[:3].transpose(0, 2, 1, 3).reshape(3, GROUPING.group_size, -1)  # (3, S, 3P)
    mean, group_basis = codec.mean.double().numpy(), codec.group_basis.double().numpy()
    residual_basis = codec.residual_basis.double().numpy()
    coded_mean = mean + (streamlines.mean(axis=1) - mean) @ group_basis.T @ group_basis  # (3, 3P)
    expected = coded_mean[:, None] + (streamlines - coded_mean[:, None]) @ residual_basis.T @ residual_basis
    with torch.no_grad():
        decoded = model(torch.from_numpy(groups[:3]).float()).reconstruction.numpy()
    assert np.allclose(decoded.transpose(0, 2, 1, 3).reshape(3, GROUPING.group_size, -1), expected, atol=1e-4)
    assert np.allclose(group_basis @ group_basis.T, np.eye(GROUPING.group_size), atol=1e-5)
    assert np.allclose(residual_basis @ residual_basis.T, np.eye(3), atol=1e-5)


def test_fitting_needs_enough_groups():
    with pytest.raises(ValueError, match="at least 4 groups"):
        fit_bases(small_model(), np.zeros((3, 3, 4, 8)), np.ones((3, 4), dtype=bool))


def test_fsq_levels_make_a_uniform_quantizer_of_the_coefficients():
    levels = [5, 8, 3, 16]
    model = small_model(bottleneck="fsq", bottleneck_options={"levels": levels})
    uniform = model.encoder.uniform
    coefficients = torch.linspace(-4, 4, 801)[:, None].expand(-1, 4)  # (N, 4)
    quantizer = build("fsq", dim=4, levels=levels)
    decoded = uniform.decompand(quantizer(uniform.precompensate(coefficients)).quantized)
    # the plain formula: steps of delta = 2 (1.2 + 0.52 ln L) / L, clipped to FSQ's integer levels
    sizes = torch.tensor(levels, dtype=torch.float32)
    delta = 2 * (1.2 + 0.52 * torch.log(sizes)) / sizes
    lowest, highest = -(sizes // 2), sizes - 1 - sizes // 2
    expected = torch.minimum(torch.maximum(torch.round(coefficients / delta), lowest), highest) * delta
    assert torch.allclose(decoded, expected, atol=1e-5)


def test_fsq_needs_one_level_per_latent_dim():
    with pytest.raises(ValueError, match="one FSQ level per latent dim: 2 levels for latent_dim=4"):
        small_model(bottleneck="fsq", bottleneck_options={"levels": [5, 5]})


def test_preset_codes_1024_numbers_per_group():
    config = preset_config("basis")
    assert config.latent_shape == (64, 1, 16)
    assert BundleAutoencoder(config).bytes_per_group == 4096


def test_training_fits_the_bases_and_the_model_file_keeps_them(tmp_path, sample_bundle):
    torch.set_num_threads(1)
    cache = prepare([sample_bundle], tmp_path / "cache", GroupingSettings(n_points=16, group_size=4), progress=False)
    config = preset_config("basis", latent_dim=4, grouping=GroupingSettings(n_points=16, group_size=4))
    train(cache, tmp_path / "run", config, TrainConfig(steps=2, batch_size=4, validate_every=2), progress=False)
    model = load_model(tmp_path / "run" / "model.pt")
    codec = model.encoder.codec
    assert float(codec.mean.abs().max()) > 0.01  # fitted, not the identity it is built with
    assert torch.equal(codec.residual_basis, model.decoder.codec.residual_basis)
    assert not torch.equal(codec.group_basis, torch.eye(4, 48))


def test_gain_is_coded_in_the_last_mean_slot_and_undone_exactly():
    from tractvq.models.basis import GAIN_FLOOR, UniformLevels, gain_latents, ungain_latents

    uniform = UniformLevels([148, 15, 13, 12], 4)
    latents = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 5.0, 5.0, 5.0])
    latents[:, -1, 0] = 0  # a gain codec leaves the mean's last coefficient out
    gained = gain_latents(latents, uniform)
    rms = latents[..., 1:].pow(2).mean(dim=(1, 2)).sqrt()
    log_gain = torch.round(torch.log(rms.clamp(min=GAIN_FLOOR)) / uniform.delta[0]) * uniform.delta[0]
    assert torch.allclose(gained[:, -1, 0], log_gain)  # on channel 0's grid
    assert gained[..., 1:].pow(2).mean().sqrt() == pytest.approx(1.0, abs=0.1)  # differences at unit scale
    assert torch.allclose(ungain_latents(gained), latents, atol=1e-5)
