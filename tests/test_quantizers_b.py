"""Gumbel, NSVQ, DiVeQ, SF-DiVeQ, GM-VQ and VQ-Diff: formulas, gradients, evaluation modes,
codebook replacement, and cross-checks against the ``diveq`` reference package."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from diveq import DIVEQ, SFDIVEQ
from scipy import stats

from tractvq.quantizers import _relaxed, build
from tractvq.quantizers._codebook import distance_logits, replace_unused_codes, squared_distances
from tractvq.quantizers.diveq import DiVeQ
from tractvq.quantizers.gmvq import GMVQ
from tractvq.quantizers.gumbel import GumbelSoftmax, _UniformPriorKL
from tractvq.quantizers.nsvq import NSVQ
from tractvq.quantizers.sf_diveq import SFDiVeQ
from tractvq.quantizers.vqdiff import VQDiff

NAMES = ["gumbel", "nsvq", "diveq", "sf-diveq", "gmvq", "vqdiff"]
HARD = ["gumbel", "nsvq", "diveq", "gmvq"]  # evaluation returns codebook rows


def _gumbel_noise(shape):
    """The Gumbel(0, 1) draw of the soft quantizers, ``-log(-log U)``: U from the seed they draw
    from torch's RNG (:func:`tractvq.quantizers._relaxed.uniform`)."""
    return -_relaxed.uniform(shape, _relaxed.noise_seed()).log().neg().log()


def _nearest(latents, codebook):
    """Brute-force nearest code (direct differences, no expansion)."""
    return (latents[:, None] - codebook[None]).pow(2).sum(-1).argmin(1)


def _unit(vectors):
    return vectors / vectors.norm(dim=1, keepdim=True)


def _set_codebook(quantizer, codes):
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.as_tensor(codes, dtype=torch.float32))


def _backward_with_loss(quantizer, latents, weights, seed):
    """:func:`_backward` with the quantizer's loss added to the objective."""
    latents = latents.clone().requires_grad_()
    torch.manual_seed(seed)
    output = quantizer(latents)
    ((output.quantized * weights).sum() + output.loss).backward()
    return output, latents.grad


def _backward(quantizer, latents, weights, seed):
    """Seeded forward of a copy of ``latents``; returns the output and its gradient."""
    latents = latents.clone().requires_grad_()
    torch.manual_seed(seed)
    output = quantizer(latents)
    (output.quantized * weights).sum().backward()
    return output, latents.grad


# ------------------------------------------------------------------------ every method


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_channels_last_input_gives_the_flat_result_in_its_shape(name, training):
    torch.manual_seed(0)
    quantizer = build(name, dim=4, codebook_size=8).train(training)
    latents = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.manual_seed(1)
    output = quantizer(latents)
    torch.manual_seed(1)
    flat = quantizer(latents.reshape(-1, 4))
    assert output.quantized.shape == latents.shape and output.quantized.dtype == torch.float64
    assert output.indices.shape == (2, 3, 5) and output.indices.dtype == torch.int64
    assert output.loss.shape == () and torch.isfinite(output.loss)
    assert {"perplexity", "usage"} <= output.stats.keys()
    torch.testing.assert_close(output.quantized.reshape(-1, 4), flat.quantized)
    assert torch.equal(output.indices.reshape(-1), flat.indices)


@pytest.mark.parametrize("name", NAMES)
def test_training_draws_its_randomness_from_the_seeded_torch_rng(name):
    torch.manual_seed(0)
    quantizer = build(name, dim=4, codebook_size=8).train()
    latents = torch.randn(256, 4)
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(quantizer(latents).quantized)
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize("name", HARD)
def test_evaluation_is_the_deterministic_nearest_code(name):
    torch.manual_seed(0)
    quantizer = build(name, dim=4, codebook_size=8).eval()
    latents = torch.randn(64, 4)
    torch.manual_seed(1)
    first = quantizer(latents)
    torch.manual_seed(2)
    second = quantizer(latents)
    assert torch.equal(first.quantized, second.quantized)
    assert torch.equal(first.indices, _nearest(latents, quantizer.codebook.weight))
    assert torch.equal(first.quantized, quantizer.indices_to_codes(first.indices).detach())


@pytest.mark.parametrize(
    ("name", "options", "bad"),
    [
        ("gumbel", {"logits": "cosine"}, "cosine"),
        ("gumbel", {"kl_weight": -1.0}, -1.0),
        ("gumbel", {"temperature": 0.0}, 0.0),
        ("gumbel", {"min_temperature": 2.0}, 2.0),
        ("gumbel", {"anneal_rate": -0.5}, -0.5),
        ("nsvq", {"replacement_interval": 0}, 0),
        ("nsvq", {"replacement_interval": 2.5}, 2.5),
        ("nsvq", {"discard_threshold": 1.5}, 1.5),
        ("nsvq", {"replacement_noise": -1.0}, -1.0),
        ("diveq", {"noise_variance": -0.001}, -0.001),
        ("sf-diveq", {"noise_variance": float("nan")}, float("nan")),
        ("sf-diveq", {"codebook_size": 1}, 1),
        ("gmvq", {"prior_std": 0.0}, 0.0),
        ("gmvq", {"latent_weight": -2.0}, -2.0),
        ("gmvq", {"kl_weight": -3.0}, -3.0),
        ("gmvq", {"min_temperature": 0.0}, 0.0),
        ("vqdiff", {"eval_mode": "argmax"}, "argmax"),
        ("vqdiff", {"temperature": -10.0}, -10.0),
        ("vqdiff", {"init_std": 0.0}, 0.0),
    ],
)
def test_bad_options_raise_value_error_naming_the_value(name, options, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        build(name, dim=4, **options)


# ------------------------------------------------------------------------ shared helpers


def test_distance_logits_are_the_negative_squared_distances_with_their_gradient():
    torch.manual_seed(0)
    latents = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    exact = -(latents[:, None] - codebook[None]).pow(2).sum(-1).detach()
    torch.testing.assert_close(distance_logits(latents, codebook).detach(), exact)
    torch.testing.assert_close(distance_logits(latents, codebook, 0.3).detach(), 0.3 * exact)
    float_latents, float_codebook = latents.detach().float(), codebook.detach().float()
    assert torch.equal(  # scale 1: exactly minus squared_distances, before its clamp at 0
        distance_logits(float_latents, float_codebook).clamp_max(0),
        -squared_distances(float_latents, float_codebook),
    )
    assert torch.autograd.gradcheck(lambda z, c: distance_logits(z, c, 0.7), (latents, codebook))


def _relaxed_sample(logits, temperature, seed):
    """:func:`_relaxed.relaxed_sample_` of ``logits`` with the draws of ``seed``."""
    return _relaxed.relaxed_sample_(_relaxed.uniform(logits.shape, seed), logits, temperature)


def test_relaxed_sample_has_the_law_of_torch_gumbel_softmax():
    """Two-sample KS tests: every weight, and the argmax frequencies (chi-square), of 20,000
    seeded draws against ``torch.nn.functional.gumbel_softmax``'s, on the same logits."""
    logits = torch.tensor([[0.0, -0.5, -1.0, -3.0]]).expand(20_000, 4)
    ours, choice = _relaxed_sample(logits, 0.7, seed=0)
    assert torch.equal(choice, ours.argmax(1))
    torch.manual_seed(1)
    reference = F.gumbel_softmax(logits, tau=0.7)
    for k in range(4):
        assert stats.ks_2samp(ours[:, k].numpy(), reference[:, k].numpy()).pvalue > 0.01
    counts = torch.stack([torch.bincount(w.argmax(1), minlength=4) for w in (ours, reference)])
    assert stats.chi2_contingency(counts.numpy()).pvalue > 0.01
    expected = 20_000 * logits[0].double().softmax(0)  # Gumbel-max: argmax ~ softmax(l)
    assert stats.chisquare(counts[0].double().numpy(), expected.numpy()).pvalue > 0.01


def test_relaxed_sample_is_the_softmax_of_logits_plus_gumbel_noise_of_the_draws():
    logits = torch.randn(50, 6) * 40  # far tails: weights below the exponential floor
    sample, choice = _relaxed_sample(logits, 0.5, seed=3)
    noise = -_relaxed.uniform((50, 6), 3).log().neg().log()
    plain = ((logits + noise) / 0.5).softmax(1)
    torch.testing.assert_close(sample, plain, atol=1e-18, rtol=1e-5)
    assert torch.equal(choice, (logits + noise).argmax(1))
    floor = math.exp(_relaxed.exp_floor(torch.float32))  # weights below it, relative to the largest
    assert plain.min() < 1e-30 and sample.min() >= floor * sample.max(1).values.min() / 6 * 0.99


def test_uniform_draws_are_24_bit_uniforms_the_same_in_any_blocks():
    draws = _relaxed.uniform((999, 7), seed=11)  # odd: a block of 6993 leaves a spare word
    source = _relaxed.UniformSource(11, "cpu")
    blocks = [source.fill_(torch.empty(rows, 7)) for rows in (1, 500, 3, 495)]
    assert torch.equal(torch.cat(blocks), draws)
    assert not torch.equal(_relaxed.uniform((999, 7), seed=12), draws)
    values = draws.double().flatten()
    assert values.min() >= 0 and values.max() < 1
    assert torch.equal(values * 2**24, (values * 2**24).round())  # torch.rand's grid
    assert stats.kstest(values.numpy(), "uniform").pvalue > 0.01
    torch.manual_seed(5)
    first = _relaxed.noise_seed()
    torch.manual_seed(5)
    assert _relaxed.noise_seed() == first  # torch.manual_seed fixes the draws


def test_exponential_floor_keeps_weights_normal_floats():
    floor = math.exp(_relaxed.exp_floor(torch.float32))
    assert floor == pytest.approx(1.08e-19, rel=0.01) and floor**2 > torch.finfo(torch.float32).tiny
    values = torch.tensor([1e-39, -1e-39, 2e-38, -3.0])
    assert _relaxed.flush_subnormal(values).tolist() == pytest.approx([0.0, 0.0, 2e-38, -3.0])


# ------------------------------------------------------------------------ Gumbel


def test_gumbel_forward_is_the_gumbel_max_code_and_gradient_the_relaxed_one():
    torch.manual_seed(0)
    quantizer = GumbelSoftmax(3, 5, temperature=2.0, min_temperature=0.1, anneal_rate=0.01)
    quantizer.set_step(50)
    tau = 2.0 * math.exp(-0.5)
    latents, weights = torch.randn(64, 3), torch.randn(64, 3)
    output, gradient = _backward(quantizer, latents, weights, seed=1)

    torch.manual_seed(1)
    noise = _gumbel_noise((64, 5))
    codebook = quantizer.codebook.weight.detach()
    relaxed = latents.clone().requires_grad_()
    logits = -(relaxed[:, None] - codebook[None]).pow(2).sum(-1)
    assert torch.equal(output.indices, (logits + noise).argmax(1))
    torch.testing.assert_close(output.quantized, codebook[output.indices])  # one-hot forward
    soft = ((logits + noise) / tau).softmax(1)
    ((soft @ codebook) * weights).sum().backward()
    torch.testing.assert_close(gradient, relaxed.grad)  # softmax gradient
    assert output.stats["temperature"].item() == pytest.approx(tau)


def _one_hot_straight_through(indices, soft):
    """``y = onehot(indices) - sg(soft) + soft``, written plainly."""
    return F.one_hot(indices, soft.shape[1]).to(soft.dtype) - soft.detach() + soft


@pytest.mark.parametrize("logits", ["distance", "linear"])
def test_gumbel_training_step_equals_the_plain_formulas_over_several_blocks(logits):
    """Codes, output, KL loss and every gradient against whole-tensor expressions, on
    N x K = 2,000 x 600 (three blocks of the block-wise computation)."""
    torch.manual_seed(0)
    quantizer = GumbelSoftmax(4, 600, logits=logits, kl_weight=0.3, temperature=0.7).train()
    latents, weights = torch.randn(2_000, 4), torch.randn(2_000, 4)
    assert len(_relaxed.row_blocks(2_000, 600)) == 3
    output, gradient = _backward_with_loss(quantizer, latents, weights, seed=1)
    torch.manual_seed(1)
    noise = _gumbel_noise((2_000, 600))
    plain = latents.clone().requires_grad_()
    reference = GumbelSoftmax(4, 600, logits=logits).train()
    reference.load_state_dict(quantizer.state_dict())
    codebook = reference.codebook.weight
    if logits == "linear":
        scores = reference.project(plain)
    else:
        scores = -(plain[:, None] - codebook[None]).pow(2).sum(-1)
    assert torch.equal(output.indices, (scores + noise).argmax(1))
    y = _one_hot_straight_through(output.indices, ((scores + noise) / 0.7).softmax(1))
    log_q = scores.log_softmax(1)
    kl = 0.3 * (log_q.exp() * (log_q + math.log(600))).sum(1).mean()
    ((y @ codebook) * weights).sum().add(kl).backward()
    torch.testing.assert_close(output.quantized, (y @ codebook).detach())
    torch.testing.assert_close(output.loss, kl.detach())
    torch.testing.assert_close(gradient, plain.grad)
    for name, parameter in quantizer.named_parameters():
        torch.testing.assert_close(parameter.grad, dict(reference.named_parameters())[name].grad, msg=name)


def test_gumbel_linear_logits_choose_argmax_of_the_projection_at_evaluation():
    torch.manual_seed(0)
    quantizer = GumbelSoftmax(3, 5, logits="linear").eval()
    latents = torch.randn(32, 3)
    output = quantizer(latents)
    assert torch.equal(output.indices, quantizer.project(latents).argmax(1))
    assert torch.equal(output.quantized, quantizer.codebook.weight[output.indices].detach())


def test_gumbel_loss_is_the_weighted_kl_of_the_posterior_to_uniform():
    quantizer = GumbelSoftmax(2, 4, kl_weight=0.5).eval()
    _set_codebook(quantizer, [[1, 0], [-1, 0], [0, 1], [0, -1]])
    assert quantizer(torch.zeros(3, 2)).loss.item() == pytest.approx(0.0, abs=1e-7)
    latents = torch.tensor([[0.5, 0.0], [0.2, -0.7]])
    posterior = (-(latents[:, None] - quantizer.codebook.weight[None]).pow(2).sum(-1)).softmax(1)
    expected = 0.5 * (posterior * (4 * posterior).log()).sum(1).mean()
    torch.testing.assert_close(quantizer(latents).loss, expected.detach())


def test_gumbel_kl_value_and_gradient_are_those_of_the_log_softmax_formula():
    torch.manual_seed(0)
    logits = (torch.randn(64, 9, dtype=torch.float64) * 30).requires_grad_()  # peaked rows too
    assert torch.autograd.gradcheck(_UniformPriorKL.apply, (logits,))
    quantizer = GumbelSoftmax(3, 9, kl_weight=0.5).eval()
    latents = (torch.randn(64, 3) * 4).requires_grad_()
    quantizer(latents).loss.backward()
    plain = latents.detach().clone().requires_grad_()
    codebook = quantizer.codebook.weight.detach()
    log_q = (-(plain[:, None] - codebook[None]).pow(2).sum(-1)).log_softmax(1)
    expected = 0.5 * (log_q.exp() * (log_q + math.log(9))).sum(1).mean()
    expected.backward()
    torch.testing.assert_close(quantizer(latents).loss, expected.detach())
    torch.testing.assert_close(latents.grad, plain.grad)


def test_gumbel_temperature_schedule_and_its_checkpoint():
    quantizer = GumbelSoftmax(2, 4, temperature=1.0, min_temperature=0.5, anneal_rate=1e-3)
    assert quantizer.temperature == 1.0
    quantizer.set_step(100)
    assert quantizer.temperature == pytest.approx(math.exp(-0.1))
    quantizer.set_step(10_000)
    assert quantizer.temperature == 0.5
    restored = GumbelSoftmax(2, 4, temperature=1.0, min_temperature=0.5, anneal_rate=1e-3)
    restored.load_state_dict(quantizer.state_dict())
    assert restored.temperature == 0.5
    with pytest.raises(ValueError, match="-1"):
        quantizer.set_step(-1)


# ------------------------------------------------------------------------ NSVQ


def test_nsvq_moves_z_by_the_quantization_distance_along_the_noise_and_gradients():
    torch.manual_seed(0)
    quantizer = NSVQ(3, 6).train()
    latents, weights = torch.randn(40, 3), torch.randn(40, 3)
    output, gradient = _backward(quantizer, latents, weights, seed=1)
    torch.manual_seed(1)
    noise = torch.randn(40, 3)

    codebook = quantizer.codebook.weight.detach()
    assert torch.equal(output.indices, _nearest(latents, codebook))
    error = latents - codebook[output.indices]  # z - c
    length = error.norm(dim=1, keepdim=True)
    step = output.quantized.detach() - latents
    torch.testing.assert_close(step.norm(dim=1, keepdim=True), length)
    torch.testing.assert_close(_unit(step), _unit(noise))
    assert output.loss.item() == 0.0

    # z_q = z + ||z - c|| u with u = v / ||v|| fixed: d/dz = I + u (z - c)^T / ||z - c||
    projected = (weights * _unit(noise)).sum(1, keepdim=True) * error / length
    torch.testing.assert_close(gradient, weights + projected)
    expected = torch.zeros_like(codebook).index_add_(0, output.indices, -projected)
    torch.testing.assert_close(quantizer.codebook.weight.grad, expected)


def test_nsvq_evaluation_returns_codes_and_counts_nothing():
    torch.manual_seed(0)
    quantizer = NSVQ(3, 6).eval()
    output = quantizer(torch.randn(10, 3))
    assert torch.equal(output.quantized, quantizer.codebook.weight[output.indices].detach())
    assert int(quantizer.usage_batches) == 0


def test_nsvq_counts_batches_and_replaces_unused_codes_by_noisy_used_ones():
    quantizer = NSVQ(2, 4, replacement_interval=3, discard_threshold=0.5, replacement_noise=1e-3)
    codes = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [100.0, 100.0]])
    _set_codebook(quantizer, codes)
    both = torch.tensor([[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1], [9.0, 9.5]])
    only_first = torch.tensor([[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1], [0.3, 0.3]])
    torch.manual_seed(0)
    for batch in (both, both, only_first):
        output = quantizer(batch)
    assert quantizer.code_usage.tolist() == [3, 2, 0, 0]  # batches, not vectors
    assert int(quantizer.usage_batches) == 3
    assert output.stats["dead_codes"].item() == 2

    quantizer(only_first)  # the interval is over: codes 2 and 3 (used 0/3 < 0.5) move first
    moved = quantizer.codebook.weight.detach()
    torch.testing.assert_close(moved[:2], codes[:2], rtol=0, atol=0)
    assert all(
        min((moved[k] - codes[j]).norm() for j in (0, 1)) < 0.01 for k in (2, 3)
    )  # copies of used codes plus N(0, 1e-3^2) noise
    assert int(quantizer.usage_batches) == 1 and quantizer.code_usage[1] == 0  # counts reset
    unused = int((quantizer.code_usage == 0).sum())
    assert quantizer.replace_unused_codes() == unused  # unused in the one counted batch
    assert quantizer.replace_unused_codes() == 0  # nothing counted since


def test_replace_unused_codes_leaves_the_codebook_when_none_or_all_are_unused():
    codebook = torch.arange(8.0).reshape(4, 2)
    for usage in ([5, 5, 5, 5], [0, 0, 0, 0]):
        assert replace_unused_codes(codebook, torch.tensor(usage), 5, 0.5, 1.0) == 0
    assert torch.equal(codebook, torch.arange(8.0).reshape(4, 2))


# ------------------------------------------------------------------------ DiVeQ


def _reference_diveq(ours, noise_std, **options):
    reference = DIVEQ(
        ours.codebook_size, ours.dim, noise_var=noise_std, allow_warning=False, verbose=False,
        **options,
    )
    reference.codebook.data.copy_(ours.codebook.weight.detach())
    return reference


def test_diveq_output_has_the_true_length_along_the_noisy_direction_and_gradients():
    torch.manual_seed(0)
    quantizer = DiVeQ(3, 6, noise_variance=0.04).train()
    latents, weights = torch.randn(40, 3), torch.randn(40, 3)
    output, gradient = _backward(quantizer, latents, weights, seed=1)
    torch.manual_seed(1)
    noise = 0.2 * torch.randn(40, 3)  # sigma = sqrt(0.04)

    codebook = quantizer.codebook.weight.detach()
    assert torch.equal(output.indices, _nearest(latents, codebook))
    offset = codebook[output.indices] - latents  # c - z
    length = offset.norm(dim=1, keepdim=True)
    step = output.quantized.detach() - latents
    torch.testing.assert_close(step.norm(dim=1, keepdim=True), length)
    torch.testing.assert_close(_unit(step), _unit(offset + noise))
    assert output.loss.item() == 0.0

    # the direction is a constant: c receives gradient only through ||c - z||
    along = (weights * _unit(offset + noise)).sum(1, keepdim=True) * offset / length
    torch.testing.assert_close(gradient, weights - along)
    expected = torch.zeros_like(codebook).index_add_(0, output.indices, along)
    torch.testing.assert_close(quantizer.codebook.weight.grad, expected)


def test_diveq_with_small_noise_outputs_the_nearest_code():
    torch.manual_seed(0)
    quantizer = DiVeQ(3, 6, noise_variance=1e-12).train()
    latents = torch.randn(20, 3) * 0.1
    output = quantizer(latents)
    torch.testing.assert_close(
        output.quantized, quantizer.codebook.weight[output.indices].detach(), rtol=0, atol=1e-5
    )


def test_diveq_matches_the_reference_package_whose_noise_var_is_a_std():
    torch.manual_seed(0)
    ours = DiVeQ(5, 16, noise_variance=0.01).train()
    reference = _reference_diveq(ours, noise_std=0.1, codebook_reset=False)
    latents, weights = torch.rand(64, 5) * 0.2, torch.randn(64, 5)
    output, gradient = _backward(ours, latents, weights, seed=3)

    expected = latents.clone().requires_grad_()
    torch.manual_seed(3)
    quantized, indices, _ = reference(expected)
    (quantized * weights).sum().backward()
    assert torch.equal(output.indices, indices)
    torch.testing.assert_close(output.quantized, quantized)
    torch.testing.assert_close(gradient, expected.grad)
    torch.testing.assert_close(ours.codebook.weight.grad, reference.codebook.grad)

    # the package's documented variance 0.01 is not the variance it draws
    misread = _reference_diveq(ours, noise_std=0.01, codebook_reset=False)
    torch.manual_seed(3)
    assert not torch.allclose(misread(latents)[0], output.quantized, atol=1e-4)

    ours.eval()
    assert torch.equal(ours(latents).quantized, reference.inference(latents)[0])


def test_diveq_codebook_replacement_matches_the_reference_package():
    torch.manual_seed(0)
    ours = DiVeQ(2, 8, replacement_interval=3, discard_threshold=0.4).train()
    reference = _reference_diveq(
        ours, noise_std=1e-3**0.5, replacement_iters=3, discard_threshold=0.4
    )
    codes = ours.codebook.weight.detach().clone()
    batches = [
        codes[rows] + 1e-4 * torch.randn(len(rows), 2) for rows in ([0, 1, 1, 2], [0, 1], [0, 3])
    ]  # usage 3, 2, 1, 1, 0, 0, 0, 0 batches: codes 2 to 7 are unused (< 0.4 of 3)
    usage = []
    for seed, batch in enumerate(batches):
        torch.manual_seed(seed)
        ours(batch)
        usage.append(ours.code_usage.clone())
    assert ours.replace_unused_codes() == 6  # from the RNG state the package's replacement sees
    for seed, batch in enumerate(batches):
        torch.manual_seed(seed)
        reference(batch)  # replaces at the end of its third call
        if seed < 2:
            assert torch.equal(usage[seed], reference.codebook_usage.long())
    torch.testing.assert_close(ours.codebook.weight, reference.codebook, rtol=0, atol=0)
    assert not torch.equal(ours.codebook.weight.detach(), codes)
    assert int(ours.code_usage.sum()) == 0 and int(reference.codebook_usage.sum()) == 0


# ------------------------------------------------------------------------ SF-DiVeQ


def _dithered_reference(latents, codebook, noise_std, seed):
    """The SF-DiVeQ formula by hand, drawing lambda, v_i, v_{i+1} in the package's order."""
    torch.manual_seed(seed)
    dither = torch.rand(len(codebook) - 1, 1)
    first_noise = noise_std * torch.randn_like(latents)
    second_noise = noise_std * torch.randn_like(latents)
    dithered = (1 - dither) * codebook[:-1] + dither * codebook[1:]
    indices = _nearest(latents, dithered)
    weight = dither[indices]
    first, second = codebook[indices] - latents, codebook[indices + 1] - latents
    quantized = (
        latents
        + (1 - weight) * first.norm(dim=1, keepdim=True) * _unit(first + first_noise)
        + weight * second.norm(dim=1, keepdim=True) * _unit(second + second_noise)
    )
    return quantized, indices, dithered[indices], weight, first_noise, second_noise


def test_sf_diveq_without_noise_outputs_the_nearest_dithered_point():
    torch.manual_seed(0)
    quantizer = SFDiVeQ(2, 5, noise_variance=0.0).train()
    latents = torch.rand(30, 2) * 0.3
    torch.manual_seed(1)
    output = quantizer(latents)
    codebook = quantizer.codebook.weight.detach()
    _, indices, points, *_ = _dithered_reference(latents, codebook, 0.0, seed=1)
    assert torch.equal(output.indices, indices)
    torch.testing.assert_close(output.quantized, points)  # on segment (c_i, c_i+1)
    counted = torch.zeros(5, dtype=torch.int64)
    counted[torch.cat([indices, indices + 1])] = 1
    assert torch.equal(quantizer.code_usage, counted)  # both ends of each chosen segment


def test_sf_diveq_formula_and_gradients_by_hand():
    torch.manual_seed(0)
    quantizer = SFDiVeQ(3, 6, noise_variance=0.04).train()
    latents, weights = torch.rand(40, 3) * 0.3, torch.randn(40, 3)
    output, gradient = _backward(quantizer, latents, weights, seed=1)
    codebook = quantizer.codebook.weight.detach()
    quantized, indices, _, weight, first_noise, second_noise = _dithered_reference(
        latents, codebook, 0.2, seed=1
    )
    assert torch.equal(output.indices, indices)
    torch.testing.assert_close(output.quantized, quantized)

    first, second = codebook[indices] - latents, codebook[indices + 1] - latents
    along_first = (1 - weight) * (weights * _unit(first + first_noise)).sum(1, keepdim=True)
    along_second = weight * (weights * _unit(second + second_noise)).sum(1, keepdim=True)
    along_first, along_second = along_first * _unit(first), along_second * _unit(second)
    torch.testing.assert_close(gradient, weights - along_first - along_second)
    expected = torch.zeros_like(codebook).index_add_(0, indices, along_first)
    expected.index_add_(0, indices + 1, along_second)
    torch.testing.assert_close(quantizer.codebook.weight.grad, expected)


def test_sf_diveq_matches_the_reference_package_whose_noise_var_is_a_std():
    torch.manual_seed(0)
    ours = SFDiVeQ(4, 12, noise_variance=0.01).train()
    reference = SFDIVEQ(12, 4, noise_var=0.1, skip_iters=0, avg_iters=0, allow_warning=False)
    reference.codebook.data.copy_(ours.codebook.weight.detach())
    latents, weights = torch.rand(64, 4) * 0.1, torch.randn(64, 4)
    output, gradient = _backward(ours, latents, weights, seed=2)
    expected = latents.clone().requires_grad_()
    torch.manual_seed(2)
    quantized, indices, _ = reference(expected)
    (quantized * weights).sum().backward()
    assert torch.equal(output.indices, indices)
    torch.testing.assert_close(output.quantized, quantized)
    torch.testing.assert_close(gradient, expected.grad)
    torch.testing.assert_close(ours.codebook.weight.grad, reference.codebook.grad)


def test_sf_diveq_evaluation_projects_onto_the_nearest_point_of_the_polyline():
    torch.manual_seed(0)
    quantizer = SFDiVeQ(3, 7).eval()
    codes = torch.randn(7, 3)
    codes[3] = codes[2]  # a zero-length segment
    _set_codebook(quantizer, codes)
    latents = torch.randn(200, 3)
    output = quantizer(latents)

    starts, ends = quantizer.codebook.weight[:-1].detach(), quantizer.codebook.weight[1:].detach()
    edges = ends - starts
    offsets = latents[:, None] - starts[None]  # (N, K-1, D)
    position = ((offsets * edges).sum(-1) / edges.pow(2).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    points = starts[None] + position[..., None] * edges[None]  # nearest point of each segment
    distances = (latents[:, None] - points).pow(2).sum(-1)  # (N, K-1)
    rows = torch.arange(200)
    nearest = points[rows, distances.argmin(1)]
    torch.testing.assert_close(output.quantized, nearest)  # the same point, also at ties
    torch.testing.assert_close(distances[rows, output.indices], distances.min(1).values)
    torch.manual_seed(9)
    assert torch.equal(quantizer(latents).quantized, output.quantized)  # deterministic
    midpoints = (starts[output.indices] + ends[output.indices]) / 2
    torch.testing.assert_close(quantizer.indices_to_codes(output.indices).detach(), midpoints)


def test_sf_diveq_evaluation_finds_segments_the_reference_package_misses():
    quantizer = SFDiVeQ(2, 4).eval()
    _set_codebook(quantizer, [[0, 0], [10, 0], [10, 10], [5, 3]])
    latents = torch.tensor([[5.0, 1.0]])
    output = quantizer(latents)
    assert output.indices.item() == 0
    torch.testing.assert_close(output.quantized, torch.tensor([[5.0, 0.0]]))  # distance 1
    reference = SFDIVEQ(4, 2, skip_iters=0, avg_iters=0, allow_warning=False)
    reference.codebook.data.copy_(quantizer.codebook.weight.detach())
    quantized, indices, _ = reference.inference(latents)
    assert indices.item() == 3  # the nearest code, not a segment
    torch.testing.assert_close(quantized, torch.tensor([[5.0, 3.0]]))  # distance 2


# ------------------------------------------------------------------------ GM-VQ


def _gmvq_logits(latents, means, prior_std):
    """log q(c|x) + const = -||z - mu_c||^2 / (2 sigma_z^2), float64."""
    return -(latents.double()[:, None] - means.double()[None]).pow(2).sum(-1) / (2 * prior_std**2)


def _gmvq_by_hand(latents, means, prior_std, choice, noise):
    """The GM-VQ output and ALBO terms in float64 for the codes ``choice``."""
    logits = _gmvq_logits(latents, means, prior_std)  # (N, K)
    latents, means = latents.double(), means.double()
    distances = -2 * prior_std**2 * logits
    variance = distances[torch.arange(len(latents)), choice] / latents.shape[1]
    quantized = means[choice] + variance.sqrt()[:, None] * noise.double()
    ratio = variance / prior_std**2
    latent_kl = (latents.shape[1] / 2 * (ratio - 1 - ratio.log())).mean()
    aggregate = logits.softmax(1).mean(0)
    aggregate_kl = (aggregate * (len(means) * aggregate).log()).sum()
    soft_perplexity = (-(aggregate * aggregate.log()).sum()).exp()
    return quantized, latent_kl, aggregate_kl, soft_perplexity


def test_gmvq_training_output_and_albo_terms_by_hand():
    quantizer = GMVQ(
        2, 3, prior_std=0.8, latent_weight=0.3, kl_weight=0.7, temperature=1.5, anneal_rate=0.0
    ).train()
    _set_codebook(quantizer, [[0, 0], [1, 0], [0, 1]])
    latents = torch.tensor([[0.2, 0.1], [0.9, -0.2], [0.3, 0.8], [0.5, 0.5], [2.0, 2.0]])
    torch.manual_seed(1)
    output = quantizer(latents)
    torch.manual_seed(1)
    gumbel, noise = _gumbel_noise((5, 3)), torch.randn(5, 2)  # the order of the draws
    means = quantizer.codebook.weight.detach()
    choice = (_gmvq_logits(latents, means, 0.8) + gumbel.double()).argmax(1)
    quantized, latent_kl, aggregate_kl, soft_perplexity = _gmvq_by_hand(
        latents, means, 0.8, choice, noise
    )
    assert torch.equal(output.indices, choice)
    torch.testing.assert_close(output.quantized.double(), quantized)
    torch.testing.assert_close(output.stats["latent_kl"].double(), latent_kl)
    torch.testing.assert_close(output.stats["aggregate_kl"].double(), aggregate_kl)
    torch.testing.assert_close(output.stats["soft_perplexity"].double(), soft_perplexity)
    torch.testing.assert_close(output.loss.double(), 0.3 * latent_kl + 0.7 * aggregate_kl)


def test_gmvq_training_step_equals_the_plain_formulas_over_several_blocks():
    """Output, loss and gradients against the whole-tensor expressions (straight-through
    one-hot, s_c and KL_c tables as constants), on 2,000 x 600 (three blocks)."""
    torch.manual_seed(0)
    quantizer = GMVQ(4, 600, prior_std=1.5, latent_weight=0.3, kl_weight=0.7, temperature=0.8).train()
    latents, weights = torch.randn(2_000, 4) * 2, torch.randn(2_000, 4)
    output, gradient = _backward_with_loss(quantizer, latents, weights, seed=1)
    torch.manual_seed(1)
    gumbel, noise = _gumbel_noise((2_000, 600)), torch.randn(2_000, 4)
    plain = latents.clone().requires_grad_()
    means = quantizer.codebook.weight.detach().clone().requires_grad_()
    distances = (plain[:, None] - means[None]).pow(2).sum(-1)  # (N, K)
    logits = -distances / (2 * 1.5**2)
    y = _one_hot_straight_through(output.indices, ((logits + gumbel) / 0.8).softmax(1))
    assert torch.equal(output.indices, (logits + gumbel).argmax(1))

    def std_and_kl(squared):
        ratio = (squared / 4).clamp_min(1e-12) / 1.5**2
        return (ratio * 1.5**2).sqrt(), 2 * (ratio - 1 - ratio.log())

    table_std, table_kl = std_and_kl(distances.detach())
    at_std, at_kl = std_and_kl(distances.gather(1, output.indices[:, None]))
    std = (y * table_std).sum(1, keepdim=True) + at_std - at_std.detach()
    latent_kl = (y * table_kl).sum(1, keepdim=True) + at_kl - at_kl.detach()
    quantized = y @ means + std * noise
    aggregate = logits.softmax(1).mean(0)
    loss = 0.3 * latent_kl.mean() + 0.7 * (aggregate * (600 * aggregate).log()).sum()
    ((quantized * weights).sum() + loss).backward()
    torch.testing.assert_close(output.quantized, quantized.detach())
    torch.testing.assert_close(output.loss, loss.detach())
    torch.testing.assert_close(gradient, plain.grad)
    torch.testing.assert_close(quantizer.codebook.weight.grad, means.grad)


def test_gmvq_gradient_reaches_latents_and_codebook():
    torch.manual_seed(0)
    quantizer = GMVQ(4, 8).train()
    latents = torch.randn(32, 4, requires_grad=True)
    output = quantizer(latents)
    (output.quantized.pow(2).sum() + output.loss).backward()
    for gradient in (latents.grad, quantizer.codebook.weight.grad):
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_gmvq_evaluation_loss_is_at_the_nearest_code_without_noise():
    quantizer = GMVQ(2, 3, prior_std=0.8, latent_weight=0.3, kl_weight=0.7).eval()
    _set_codebook(quantizer, [[0, 0], [1, 0], [0, 1]])
    latents = torch.tensor([[0.2, 0.1], [0.9, -0.2], [0.3, 0.8]])
    output = quantizer(latents)
    assert output.indices.tolist() == [0, 1, 2]
    _, latent_kl, aggregate_kl, _ = _gmvq_by_hand(
        latents, quantizer.codebook.weight.detach(), 0.8, output.indices, torch.zeros(3, 2)
    )
    torch.testing.assert_close(output.loss.double(), 0.3 * latent_kl + 0.7 * aggregate_kl)


def test_gmvq_temperature_anneals_from_two_to_a_tenth():
    quantizer = GMVQ(2, 4)
    assert quantizer.temperature == 2.0
    quantizer.set_step(30_000)
    assert quantizer.temperature == pytest.approx(0.1, rel=0.05)
    quantizer.set_step(10**6)
    assert quantizer.temperature == 0.1


# ------------------------------------------------------------------------ VQ-Diff


def test_vqdiff_training_output_is_the_gumbel_softmax_weighted_mean_of_codes():
    torch.manual_seed(0)
    quantizer = VQDiff(3, 6).train()
    latents = torch.randn(16, 3) * 2
    torch.manual_seed(1)
    output = quantizer(latents)
    codebook = quantizer.codebook.weight.detach()
    logits = -(latents[:, None] - codebook[None]).pow(2).sum(-1)
    torch.manual_seed(1)
    weights = ((logits + _gumbel_noise((16, 6))) / 10.0).softmax(1)  # tau = 10
    torch.testing.assert_close(output.quantized, weights @ codebook)
    assert torch.equal(output.indices, weights.argmax(1))
    assert output.loss.item() == 0.0


def test_vqdiff_training_step_equals_the_plain_formulas_over_several_blocks():
    torch.manual_seed(0)
    quantizer = VQDiff(4, 600, temperature=3.0).train()
    latents, weights = torch.randn(2_000, 4) * 2, torch.randn(2_000, 4)
    output, gradient = _backward(quantizer, latents, weights, seed=1)
    torch.manual_seed(1)
    noise = _gumbel_noise((2_000, 600))
    plain = latents.clone().requires_grad_()
    codebook = quantizer.codebook.weight.detach().clone().requires_grad_()
    mixture = ((-(plain[:, None] - codebook[None]).pow(2).sum(-1) + noise) / 3.0).softmax(1)
    ((mixture @ codebook) * weights).sum().backward()
    torch.testing.assert_close(output.quantized, (mixture @ codebook).detach())
    torch.testing.assert_close(gradient, plain.grad)
    torch.testing.assert_close(quantizer.codebook.weight.grad, codebook.grad)
    perplexity = (-(mixture.mean(0) * mixture.mean(0).log()).sum()).exp()
    torch.testing.assert_close(output.stats["soft_perplexity"], perplexity.detach())


def test_vqdiff_evaluation_modes():
    torch.manual_seed(0)
    latents = torch.randn(16, 3) * 2
    quantizer = VQDiff(3, 6).eval()  # "sample", as published: stochastic at evaluation
    torch.manual_seed(1)
    first = quantizer(latents).quantized
    torch.manual_seed(2)
    assert not torch.equal(first, quantizer(latents).quantized)

    codebook = quantizer.codebook.weight.detach()
    logits = -(latents[:, None] - codebook[None]).pow(2).sum(-1)
    quantizer.eval_mode = "mean"
    output = quantizer(latents)
    weights = (logits / 10.0).softmax(1)
    torch.testing.assert_close(output.quantized, weights @ codebook)
    assert torch.equal(output.indices, _nearest(latents, codebook))
    soft = (-(weights.mean(0) * weights.mean(0).log()).sum()).exp()
    torch.testing.assert_close(output.stats["soft_perplexity"], soft)
    with torch.inference_mode():  # encoding (no autograd) gives the very same values
        encoded = quantizer(latents)
    assert torch.equal(encoded.quantized, output.quantized) and torch.equal(encoded.indices, output.indices)

    quantizer.eval_mode = "hard"
    output = quantizer(latents)
    assert torch.equal(output.indices, _nearest(latents, codebook))
    assert torch.equal(output.quantized, codebook[output.indices])
    assert torch.equal(output.quantized, quantizer.indices_to_codes(output.indices).detach())


def test_vqdiff_codebook_is_n_0_2_and_loads_the_published_layout():
    torch.manual_seed(0)
    quantizer = build("vqdiff", dim=64)
    weight = quantizer.codebook.weight.detach()
    assert weight.shape == (512, 64)
    assert abs(weight.std().item() - 2.0) < 0.05 and abs(weight.mean().item()) < 0.05
    published = torch.randn(512, 64)  # stands for _vq_vae._embedding.weight
    quantizer.load_state_dict({"codebook.weight": published})
    assert torch.equal(quantizer.codebook.weight.detach(), published)
