"""Formulas of identity, gaussian, vq, vq-ema, rotation, householder and fsq, pinned by hand
and cross-checked against vector-quantize-pytorch (a test dependency)."""

from __future__ import annotations

import math

import pytest
import torch
from vector_quantize_pytorch import FSQ as ReferenceFSQ
from vector_quantize_pytorch import VectorQuantize
from vector_quantize_pytorch.vector_quantize_pytorch import Codebook as ReferenceCodebook
from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as reference_rotate_to

from tractvq.quantizers import available, build
from tractvq.quantizers.bottlenecks import GaussianBottleneck
from tractvq.quantizers.ema import EMAVectorQuantizer
from tractvq.quantizers.fsq import FSQ
from tractvq.quantizers.householder import HouseholderVQ, reflect_to
from tractvq.quantizers.rotation import RotationVQ, rotate_to
from tractvq.quantizers.vq import VectorQuantizer

NAMES = ["identity", "gaussian", "vq", "vq-ema", "rotation", "householder", "fsq"]
DISCRETE = ["vq", "vq-ema", "rotation", "householder", "fsq"]

# A hand-made 2-D codebook and batch: z0 -> code 1, z1 -> code 2, z2 -> code 0.
CODEBOOK = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
LATENTS = torch.tensor([[0.9, 0.1], [0.2, 0.7], [-0.1, -0.2]])
INDICES = torch.tensor([1, 2, 0])
SQUARED_ERROR = 0.01 + 0.01 + 0.04 + 0.09 + 0.01 + 0.04  # sum of (z - c)^2 over the batch


def set_codebook(quantizer, codebook: torch.Tensor) -> None:
    """Put ``codebook`` into a vq-like or EMA quantizer (EMA: a consistent start, m = e, N = 1)."""
    with torch.no_grad():
        quantizer.codebook.weight.copy_(codebook)
        if isinstance(quantizer, EMAVectorQuantizer):
            quantizer.codebook.embedding_sum.copy_(codebook)
            quantizer.codebook.cluster_size.fill_(1.0)


def output_gradient(quantizer, latents: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """d(sum(upstream * output)) / d latents: the gradient the encoder receives."""
    latents = latents.clone().requires_grad_(True)
    (quantizer(latents).quantized * upstream).sum().backward()
    return latents.grad


# --- the interface, for every method -------------------------------------------------------


def test_all_registered():
    names = [name for name, _, _ in available()]
    assert set(NAMES) <= set(names)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_batch_equals_flat_batch(name):
    torch.manual_seed(0)
    quantizer = build(name, dim=4, codebook_size=16).eval()
    latents = torch.randn(2, 3, 5, 4)  # (B, H, W, D)
    output = quantizer(latents)
    flat = quantizer(latents.reshape(-1, 4))
    assert output.quantized.shape == latents.shape
    assert torch.equal(output.quantized.reshape(-1, 4), flat.quantized)
    assert output.loss.shape == () and output.loss.dtype == torch.float32
    if name in DISCRETE:
        assert output.indices.shape == (2, 3, 5) and output.indices.dtype == torch.int64
        assert torch.equal(quantizer.indices_to_codes(output.indices), output.quantized)
        assert set(output.stats) >= {"perplexity", "usage"}
    else:
        assert output.indices is None


@pytest.mark.parametrize("name", NAMES)
def test_wrong_last_dim_raises(name):
    quantizer = build(name, dim=4, codebook_size=16)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        quantizer(torch.randn(3, 5))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_raises(name):
    with pytest.raises(ValueError, match="bogus"):
        build(name, dim=4, codebook_size=16, bogus=1)


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_with_seed(name):
    options = {"revive_dead_codes": True} if name in ("vq-ema", "householder") else {}
    latents = torch.randn(40, 4)
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        quantizer = build(name, dim=4, codebook_size=64, **options)
        output = quantizer(latents)  # training mode: sampling, EMA, revival all draw here
        results.append((quantizer.state_dict(), output.quantized))
    (state_a, out_a), (state_b, out_b) = results
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert torch.equal(out_a, out_b)


# --- identity ------------------------------------------------------------------------------


def test_identity_passes_latents_and_gradient():
    quantizer = build("identity", dim=3)
    latents = torch.randn(2, 4, 3)
    output = quantizer(latents)
    assert torch.equal(output.quantized, latents)
    assert output.indices is None and output.stats == {} and output.loss.item() == 0.0
    upstream = torch.randn(2, 4, 3)
    assert torch.equal(output_gradient(quantizer, latents, upstream), upstream)
    with pytest.raises(ValueError, match="continuous"):
        quantizer.indices_to_codes(torch.zeros(2, dtype=torch.int64))


# --- gaussian ------------------------------------------------------------------------------


def test_gaussian_kl_by_hand():
    quantizer = GaussianBottleneck(3, latent_dim=2, kl_weight=0.5)
    with torch.no_grad():  # mu = (1, -2), sigma^2 = (1, 4) for every input
        quantizer.mean.weight.zero_()
        quantizer.mean.bias.copy_(torch.tensor([1.0, -2.0]))
        quantizer.log_variance.weight.zero_()
        quantizer.log_variance.bias.copy_(torch.tensor([0.0, math.log(4.0)]))
    output = quantizer(torch.randn(5, 3))
    # 0.5 * [(1 + 1 - 1 - 0) + (4 + 4 - 1 - log 4)] = 4 - log 2
    kl = 4 - math.log(2)
    assert output.stats["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert output.loss.item() == pytest.approx(0.5 * kl, rel=1e-6)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(1)
    quantizer = GaussianBottleneck(4, latent_dim=3, kl_weight=2.0)
    latents = torch.randn(7, 4)
    mean = quantizer.mean(latents)
    std = torch.exp(0.5 * quantizer.log_variance(latents))
    posterior = torch.distributions.Normal(mean, std)
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(std))
    kl = torch.distributions.kl_divergence(posterior, prior).sum(dim=1).mean()
    output = quantizer(latents)
    torch.testing.assert_close(output.stats["kl"], kl.detach())
    torch.testing.assert_close(output.loss, 2.0 * kl.detach())


def test_gaussian_samples_in_training_and_returns_mean_in_eval():
    torch.manual_seed(2)
    quantizer = GaussianBottleneck(3)  # latent_dim = D: no output projection
    latents = torch.randn(6, 3)
    mean = quantizer.mean(latents).detach()
    std = torch.exp(0.5 * quantizer.log_variance(latents)).detach()
    torch.manual_seed(9)
    sampled = quantizer(latents).quantized
    torch.manual_seed(9)
    torch.testing.assert_close(sampled, mean + std * torch.randn(6, 3))
    quantizer.eval()
    assert torch.equal(quantizer(latents).quantized, mean)
    assert torch.equal(quantizer(latents).quantized, quantizer(latents).quantized)
    assert quantizer.kl_weight == 1e-7  # the published VQ-Diff VAE baseline


def test_gaussian_latent_dim_projects_back():
    torch.manual_seed(3)
    quantizer = GaussianBottleneck(5, latent_dim=2).eval()
    assert quantizer.mean.out_features == 2 and quantizer.log_variance.out_features == 2
    latents = torch.randn(2, 4, 5)
    output = quantizer(latents)
    assert output.quantized.shape == (2, 4, 5)
    torch.testing.assert_close(output.quantized, quantizer.project_out(quantizer.mean(latents)))


@pytest.mark.parametrize("options", [{"latent_dim": 0}, {"latent_dim": 2.5}, {"kl_weight": -1.0}])
def test_gaussian_bad_options(options):
    with pytest.raises(ValueError, match=repr(next(iter(options.values())))):
        GaussianBottleneck(3, **options)


# --- vq ------------------------------------------------------------------------------------


def test_vq_forward_loss_and_gradients_by_hand():
    quantizer = VectorQuantizer(2, codebook_size=3)
    set_codebook(quantizer, CODEBOOK)
    latents = LATENTS.clone().requires_grad_(True)
    output = quantizer(latents)
    assert torch.equal(output.indices, INDICES)
    assert torch.equal(output.quantized, CODEBOOK[INDICES])  # exactly the codes
    # ||sg(z) - c||^2 + 0.25 ||z - sg(c)||^2, each a mean over N * D = 6 numbers
    assert output.loss.item() == pytest.approx(1.25 * SQUARED_ERROR / 6, rel=1e-6)
    output.loss.backward()
    difference = LATENTS - CODEBOOK[INDICES]
    torch.testing.assert_close(latents.grad, 0.25 * 2 * difference / 6)  # commitment only
    expected = torch.zeros(3, 2).index_add_(0, INDICES, -2 * difference / 6)  # codebook term
    torch.testing.assert_close(quantizer.codebook.weight.grad, expected)


def test_vq_straight_through_gradient_is_identity():
    quantizer = VectorQuantizer(2, codebook_size=3)
    set_codebook(quantizer, CODEBOOK)
    upstream = torch.randn(3, 2)
    assert torch.equal(output_gradient(quantizer, LATENTS, upstream), upstream)
    assert quantizer.codebook.weight.grad is None  # the decoder's gradient skips the codebook


def test_vq_codebook_init():
    torch.manual_seed(4)
    uniform = VectorQuantizer(8, codebook_size=64).codebook.weight
    assert uniform.abs().max() <= 1 / 64 and uniform.std() > 1 / 64 / 3
    normal = VectorQuantizer(8, codebook_size=64, init="normal").codebook.weight
    assert 0.8 < normal.std() < 1.2
    with pytest.raises(ValueError, match="'bogus'"):
        VectorQuantizer(8, codebook_size=64, init="bogus")
    with pytest.raises(ValueError, match="-0.5"):
        VectorQuantizer(8, commitment=-0.5)
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(8, codebook_size=1)


def test_vq_eval_equals_train():
    torch.manual_seed(5)
    quantizer = build("vq", dim=4, codebook_size=8)
    latents = torch.randn(10, 4)
    trained = quantizer(latents)
    evaluated = quantizer.eval()(latents)
    assert torch.equal(trained.quantized, evaluated.quantized)
    assert torch.equal(trained.loss, evaluated.loss)


# --- vq-ema and householder: the EMA codebook -----------------------------------------------

EMA_LATENTS = torch.tensor([[0.9, 0.1], [1.1, -0.1], [0.2, 0.7]])  # -> codes 1, 1, 2


@pytest.mark.parametrize("cls", [EMAVectorQuantizer, HouseholderVQ])
def test_ema_update_by_hand(cls):
    assert cls(2, codebook_size=3).codebook.eps == 1e-5  # the published smoothing
    quantizer = cls(2, codebook_size=3, eps=0.5)  # decay 0.99, beta 0.25; visible smoothing
    set_codebook(quantizer, CODEBOOK)
    output = quantizer(EMA_LATENTS)
    assert torch.equal(output.indices, torch.tensor([1, 1, 2]))
    assert torch.equal(output.quantized, CODEBOOK[[1, 1, 2]])  # the codes before the update
    # commitment only: 0.25 * mean((z - c)^2) = 0.25 * (4 * 0.01 + 0.04 + 0.09) / 6
    assert output.loss.item() == pytest.approx(0.25 * 0.17 / 6, rel=1e-6)
    # N = 0.99 * 1 + 0.01 * n with n = (0, 2, 1)
    cluster_size = torch.tensor([0.99, 1.01, 1.0])
    # m = 0.99 * e + 0.01 * sum of the assigned z
    embedding_sum = torch.tensor([[0.0, 0.0], [0.99 + 0.01 * 2.0, 0.0], [0.002, 0.99 + 0.007]])
    # Laplace smoothing: (N + eps) / (sum N + K eps) * sum N, with sum N = 3
    smoothed = (cluster_size + 0.5) / (3 + 3 * 0.5) * 3
    codebook = quantizer.codebook
    torch.testing.assert_close(codebook.cluster_size, cluster_size)
    torch.testing.assert_close(codebook.embedding_sum, embedding_sum)
    torch.testing.assert_close(codebook.weight, embedding_sum / smoothed[:, None])
    assert output.stats["dead_codes"].item() == 1  # only code 0: 0.99 < 1


def test_ema_no_update_in_eval_and_no_gradient_to_codebook():
    quantizer = EMAVectorQuantizer(2, codebook_size=3).eval()
    set_codebook(quantizer, CODEBOOK)
    before = {key: value.clone() for key, value in quantizer.state_dict().items()}
    upstream = torch.randn(3, 2)
    assert torch.equal(output_gradient(quantizer, EMA_LATENTS, upstream), upstream)  # STE
    assert all(torch.equal(before[key], value) for key, value in quantizer.state_dict().items())
    assert list(quantizer.parameters()) == []  # the codebook is buffers only


def test_ema_update_matches_vector_quantize_pytorch():
    torch.manual_seed(6)
    quantizer = EMAVectorQuantizer(3, codebook_size=5)
    reference = ReferenceCodebook(
        dim=3, codebook_size=5, decay=0.99, eps=1e-5, threshold_ema_dead_code=0
    )
    with torch.no_grad():
        reference.embed.copy_(quantizer.codebook.weight[None])
        reference.embed_avg.copy_(quantizer.codebook.weight[None])
    for _ in range(3):
        latents = torch.randn(20, 3)
        output = quantizer(latents)
        _, reference_indices, _ = reference(latents[None])
        assert torch.equal(output.indices, reference_indices[0])
        torch.testing.assert_close(quantizer.codebook.weight, reference.embed[0])
        torch.testing.assert_close(quantizer.codebook.cluster_size, reference.cluster_size[0])


def test_dead_code_revival():
    quantizer = EMAVectorQuantizer(2, codebook_size=4, revive_dead_codes=True)
    set_codebook(quantizer, torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]))
    latents = torch.tensor([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, -0.1], [0.2, 0.2]])
    torch.manual_seed(8)
    output = quantizer(latents)  # every latent picks code 0: codes 1-3 fall to N = 0.99
    assert output.stats["dead_codes"].item() == 3
    codebook = quantizer.codebook
    revived = codebook.weight[1:]
    matches = (revived[:, None, :] == latents[None]).all(dim=2)  # (3, 5)
    assert torch.equal(matches.sum(dim=1), torch.ones(3, dtype=torch.int64))  # each a latent
    assert matches.any(dim=0).sum() == 3  # three different latents
    torch.testing.assert_close(codebook.cluster_size[1:], torch.ones(3))  # reset to threshold
    torch.testing.assert_close(codebook.embedding_sum[1:], revived)  # threshold * z
    assert codebook.cluster_size[0].item() == pytest.approx(0.99 + 0.01 * 5)  # not revived
    # The same seed revives the same latents.
    again = EMAVectorQuantizer(2, codebook_size=4, revive_dead_codes=True)
    set_codebook(again, torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]))
    torch.manual_seed(8)
    again(latents)
    assert torch.equal(again.codebook.weight, codebook.weight)


def test_dead_code_revival_with_fewer_latents_than_dead_codes():
    torch.manual_seed(9)
    quantizer = EMAVectorQuantizer(2, codebook_size=8, revive_dead_codes=True)
    latents = torch.randn(2, 2)
    output = quantizer(latents)  # at most 2 codes used, at least 6 dead
    assert output.stats["dead_codes"].item() >= 6
    matches = (quantizer.codebook.weight[:, None, :] == latents[None]).all(dim=2)  # (8, 2)
    assert torch.equal(matches.sum(dim=0), torch.ones(2, dtype=torch.int64))  # one code each
    assert matches.sum().item() == 2  # the other dead codes wait for the next batch


def test_dead_codes_off_by_default():
    quantizer = EMAVectorQuantizer(2, codebook_size=3)
    set_codebook(quantizer, CODEBOOK)
    quantizer(EMA_LATENTS)
    torch.testing.assert_close(quantizer.codebook.weight[0], torch.zeros(2))  # code 0 stays


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({"decay": 1.0}, "1.0"),
        ({"decay": -0.1}, "-0.1"),
        ({"eps": 0.0}, "0.0"),
        ({"dead_code_threshold": -1.0}, "-1.0"),
        ({"commitment": -1.0}, "-1.0"),
    ],
)
def test_ema_bad_options(options, value):
    with pytest.raises(ValueError, match=value):
        EMAVectorQuantizer(2, codebook_size=3, **options)


# --- rotation trick ------------------------------------------------------------------------


def explicit_rotation(z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The D x D matrix R = I - 2 r r^T + 2 q e^T and the scale ||c|| / ||z||."""
    e, q = z / z.norm(), c / c.norm()
    r = (e + q) / (e + q).norm()
    rotation = torch.eye(len(z)) - 2 * torch.outer(r, r) + 2 * torch.outer(q, e)
    return rotation, c.norm() / z.norm()


def explicit_reflection(z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The D x D matrix H = I - 2 v v^T with v along z/||z|| - c/||c||, and ||c|| / ||z||."""
    v = z / z.norm() - c / c.norm()
    v = v / v.norm()
    return torch.eye(len(z)) - 2 * torch.outer(v, v), c.norm() / z.norm()


def test_rotation_matrix_is_a_rotation_taking_z_to_c():
    torch.manual_seed(10)
    z, c = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    rotation, scale = explicit_rotation(z, c)
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(5, dtype=torch.float64))
    assert torch.det(rotation).item() == pytest.approx(1.0)
    torch.testing.assert_close(scale * rotation @ z, c)


def test_rotation_forward_is_code_and_gradient_is_rotated_and_rescaled():
    torch.manual_seed(11)
    quantizer = RotationVQ(5, codebook_size=4, init="normal")
    latents, upstream = torch.randn(6, 5), torch.randn(6, 5)
    output = quantizer(latents)
    codes = quantizer.codebook.weight[output.indices].detach()
    assert torch.equal(output.quantized, codes)
    gradient = output_gradient(quantizer, latents, upstream)
    for n in range(6):
        rotation, scale = explicit_rotation(latents[n], codes[n])
        torch.testing.assert_close(gradient[n], scale * rotation.T @ upstream[n])


def test_rotation_and_householder_gradients_by_hand():
    # z = (1, 0) -> c = (0, 2). Rotation: R = [[0, -1], [1, 0]], s = 2.
    # Householder: v = (1, -1)/sqrt 2, H = [[0, 1], [1, 0]], s = 2.
    codebook = torch.tensor([[0.0, 2.0], [-5.0, -5.0]])
    latents = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    upstream = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # along c, then orthogonal to c
    rotation = RotationVQ(2, codebook_size=2)
    householder = HouseholderVQ(2, codebook_size=2).eval()
    set_codebook(rotation, codebook)
    set_codebook(householder, codebook)
    expected_rotation = torch.tensor([[2.0, 0.0], [0.0, -2.0]])  # 2 R^T g
    expected_householder = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # 2 H g
    rotated = output_gradient(rotation, latents, upstream)
    reflected = output_gradient(householder, latents, upstream)
    torch.testing.assert_close(rotated, expected_rotation)
    torch.testing.assert_close(reflected, expected_householder)


def test_rotation_loss_as_vq():
    rotation = RotationVQ(2, codebook_size=3)
    set_codebook(rotation, CODEBOOK)
    assert rotation(LATENTS).loss.item() == pytest.approx(1.25 * SQUARED_ERROR / 6, rel=1e-6)


def test_rotate_to_matches_vector_quantize_pytorch():
    torch.manual_seed(12)
    latents, codes, upstream = torch.randn(50, 7), torch.randn(50, 7), torch.randn(50, 7)
    ours_in = latents.clone().requires_grad_(True)
    theirs_in = latents.clone().requires_grad_(True)
    ours, theirs = rotate_to(ours_in, codes), reference_rotate_to(theirs_in, codes)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours, codes, rtol=1e-4, atol=1e-5)  # z~ is numerically c
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad)


def test_rotation_quantizer_matches_vector_quantize_pytorch():
    torch.manual_seed(13)
    quantizer = RotationVQ(6, codebook_size=16, init="normal")
    reference = VectorQuantize(
        dim=6, codebook_size=16, rotation_trick=True, ema_update=False, commitment_weight=0.25
    )
    with torch.no_grad():
        reference._codebook.embed.copy_(quantizer.codebook.weight[None])
    latents, upstream = torch.randn(40, 6), torch.randn(40, 6)
    ours_in = latents.clone().requires_grad_(True)
    theirs_in = latents[None].clone().requires_grad_(True)
    ours = quantizer(ours_in)
    theirs, indices, commitment = reference(theirs_in)
    assert torch.equal(ours.indices, indices[0])
    torch.testing.assert_close(ours.quantized, theirs[0])
    (ours.quantized * upstream).sum().backward()
    (theirs[0] * upstream).sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad[0])
    # Their loss is our commitment term alone; the gradients to z agree.
    ours_in.grad, theirs_in.grad = None, None
    quantizer(ours_in).loss.backward()
    reference(theirs_in)[2].backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad[0])


# --- householder ---------------------------------------------------------------------------


def test_householder_matrix_is_a_reflection_taking_z_to_c():
    torch.manual_seed(14)
    z, c = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    reflection, scale = explicit_reflection(z, c)
    torch.testing.assert_close(reflection @ reflection, torch.eye(5, dtype=torch.float64))
    assert torch.det(reflection).item() == pytest.approx(-1.0)
    torch.testing.assert_close(scale * reflection @ z, c)


def test_householder_forward_is_code_and_gradient_is_reflected_and_rescaled():
    torch.manual_seed(15)
    quantizer = HouseholderVQ(5, codebook_size=4).eval()  # no EMA step between the calls
    latents, upstream = torch.randn(6, 5), torch.randn(6, 5)
    output = quantizer(latents)
    codes = quantizer.codebook.weight[output.indices]
    assert torch.equal(output.quantized, codes)
    gradient = output_gradient(quantizer, latents, upstream)
    for n in range(6):
        reflection, scale = explicit_reflection(latents[n], codes[n])
        torch.testing.assert_close(gradient[n], scale * reflection @ upstream[n])


def test_reflect_to_is_numerically_the_code():
    torch.manual_seed(16)
    latents, codes = torch.randn(30, 8), torch.randn(30, 8)
    torch.testing.assert_close(reflect_to(latents, codes), codes, rtol=1e-4, atol=1e-5)
    codes = torch.tensor([[3.0, 4.0], [0.0, -2.0]])  # exact norms: z/||z|| == c/||c||
    latents = (2 * codes).requires_grad_(True)
    aligned = reflect_to(latents, codes)  # v = 0, H = I
    assert torch.equal(aligned, codes)
    upstream = torch.randn(2, 2)
    (aligned * upstream).sum().backward()
    torch.testing.assert_close(latents.grad, 0.5 * upstream)  # ||c|| / ||z|| = 1/2


# --- fsq -----------------------------------------------------------------------------------


def paper_bound(z: float, levels: int) -> float:
    """The paper's bound (appendix A.1, atanh), written out with math."""
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    return math.tanh(z + math.atanh(offset / half_l)) * half_l - offset


def test_fsq_grid_and_mixed_radix_indices():
    quantizer = FSQ(4, levels=[8, 5, 5, 5])
    assert quantizer.codebook_size == 1000 and quantizer.bits_per_index == math.log2(1000)
    codes = quantizer.indices_to_codes(torch.arange(1000))  # (1000, 4)
    assert torch.unique(codes, dim=0).shape == (1000, 4)
    assert set(codes[:, 0].tolist()) == {n / 4 for n in range(-4, 4)}
    for channel in (1, 2, 3):
        assert set(codes[:, channel].tolist()) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    by_hand = {  # basis (1, 8, 40, 200), level index = code * (L // 2) + L // 2
        0: [-1.0, -1.0, -1.0, -1.0],
        1: [-0.75, -1.0, -1.0, -1.0],
        8: [-1.0, -0.5, -1.0, -1.0],
        40: [-1.0, -1.0, -0.5, -1.0],
        500: [0.0, 0.0, 0.0, 0.0],
        999: [0.75, 1.0, 1.0, 1.0],
    }
    for index, code in by_hand.items():
        assert quantizer.indices_to_codes(torch.tensor(index)).tolist() == code


def test_fsq_forward_values_by_hand():
    quantizer = FSQ(4, levels=[8, 5, 5, 5])
    latents = torch.tensor([[0.0] * 4, [100.0] * 4, [-100.0] * 4, [0.3] * 4, [-0.6] * 4])
    output = quantizer(latents)
    expected = [[round(paper_bound(z, n)) / (n // 2) for n in (8, 5, 5, 5)] for z in latents[:, 0]]
    assert output.quantized.tolist() == expected
    assert expected[:3] == [[0.0] * 4, [0.75, 1.0, 1.0, 1.0], [-1.0] * 4]
    assert output.indices[:3].tolist() == [500, 999, 0]
    assert torch.equal(quantizer.indices_to_codes(output.indices), output.quantized)
    assert output.loss.item() == 0.0


def test_fsq_straight_through_gradient():
    quantizer = FSQ(4, levels=[8, 5, 7, 4])
    torch.manual_seed(17)
    latents, upstream = torch.randn(10, 4), torch.randn(10, 4)
    gradient = output_gradient(quantizer, latents, upstream)
    levels = torch.tensor([8.0, 5.0, 7.0, 4.0])
    half_l = (levels - 1) * (1 - 1e-3) / 2
    shift = torch.atanh(torch.tensor([0.5, 0.0, 0.0, 0.5]) / half_l)  # atanh, not the listing's tan
    half_width = torch.tensor([4.0, 2.0, 3.0, 2.0])
    derivative = (1 - torch.tanh(latents + shift) ** 2) * half_l / half_width
    torch.testing.assert_close(gradient, upstream * derivative)


def test_fsq_projections_when_dim_differs():
    torch.manual_seed(18)
    quantizer = build("fsq", dim=6, codebook_size=7, levels=[5, 5, 5])  # codebook_size ignored
    assert quantizer.codebook_size == 125
    assert quantizer.project_in.in_features == 6 and quantizer.project_in.out_features == 3
    latents = torch.randn(2, 5, 6)
    output = quantizer(latents)
    assert output.quantized.shape == (2, 5, 6) and output.indices.shape == (2, 5)
    torch.testing.assert_close(quantizer.indices_to_codes(output.indices), output.quantized)
    latents.requires_grad_(True)
    quantizer(latents).quantized.sum().backward()
    assert quantizer.project_in.weight.grad.abs().sum() > 0  # learned through the STE


@pytest.mark.parametrize("levels", [[2, 5], [], [5.5, 5], [5, 1]])
def test_fsq_bad_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        FSQ(len(levels) or 1, levels=levels)


def test_fsq_matches_vector_quantize_pytorch_away_from_rounding_boundaries():
    torch.manual_seed(19)
    levels = [8, 5, 5, 5]
    quantizer, reference = FSQ(4, levels=levels), ReferenceFSQ(levels=levels)
    latents = 1.5 * torch.randn(2000, 4)
    output = quantizer(latents)
    codes, indices = reference(latents[None])
    bounded = torch.tensor(
        [[paper_bound(z, n) for z, n in zip(row, levels)] for row in latents.tolist()]
    )  # (2000, 4)
    clear = ((bounded - bounded.floor() - 0.5).abs() > 0.02).all(dim=1)  # (2000,)
    assert clear.float().mean() > 0.8
    assert torch.equal(output.quantized[clear], codes[0][clear])
    assert torch.equal(output.indices[clear], indices[0][clear].long())


def test_fsq_documented_deviation_of_vector_quantize_pytorch():
    # L = 5 and z = atanh(0.75): bound = 0.75 * 2 (1 -+ eps) = 1.4985 (paper) or 1.5015 (package).
    latents = torch.full((1, 3), math.atanh(0.75))
    ours = FSQ(3, levels=[5, 5, 5])(latents).quantized
    theirs, _ = ReferenceFSQ(levels=[5, 5, 5])(latents[None])
    assert ours.tolist() == [[0.5, 0.5, 0.5]]
    assert theirs[0].tolist() == [[1.0, 1.0, 1.0]]
