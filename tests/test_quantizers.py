"""The one interface, checked the same way for every registered quantizer."""

import math

import pytest
import torch

from tractvq.quantizers import QuantizerOutput, available, build

NAMES = [name for name, _, _ in available()]
DIM, CODES = 4, 16


def _build(name):
    options = {"levels": [5, 5, 3, 3]} if name == "fsq" else {}
    return build(name, dim=DIM, codebook_size=CODES, **options)


def test_the_registry_holds_the_thirteen_methods_with_descriptions_and_references():
    assert NAMES == ["identity", "gaussian", "vq", "vq-ema", "rotation", "householder", "gumbel",
                     "nsvq", "diveq", "sf-diveq", "gmvq", "vqdiff", "fsq"]
    for name, description, reference in available():
        assert description and reference, name


def test_unknown_names_and_options_are_value_errors_that_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown quantizer 'vq2'; choose one of: identity, gaussian, vq"):
        build("vq2", dim=4)
    with pytest.raises(ValueError, match=r"quantizer 'vq' takes no option 'temperature'; its options are: commitment"):
        build("vq", dim=4, temperature=1.0)
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        build("vq", dim=0)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_trains_a_step_on_channels_last_input(name):
    torch.manual_seed(0)
    quantizer = _build(name)
    latents = torch.randn(2, 3, 5, DIM, requires_grad=True)  # (B, H, W, D)
    output = quantizer(latents)
    assert isinstance(output, QuantizerOutput)
    assert output.quantized.shape == latents.shape and output.quantized.dtype == latents.dtype
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    if quantizer.discrete:
        assert output.indices.shape == (2, 3, 5) and output.indices.dtype == torch.int64
        assert {"perplexity", "usage"} <= set(output.stats)
        assert 1 <= output.stats["perplexity"] <= 30  # at most the 30 vectors of the batch
    else:
        assert output.indices is None
    (output.quantized.square().mean() + output.loss).backward()
    assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    parameters = [p for p in quantizer.parameters() if p.requires_grad]
    if parameters:
        torch.optim.SGD(parameters, lr=0.1).step()


@pytest.mark.parametrize("name", [name for name in NAMES if _build(name).discrete])
def test_indices_to_codes_gives_what_evaluation_decodes(name):
    torch.manual_seed(1)
    quantizer = _build(name).eval()
    if name == "vqdiff":
        quantizer = build("vqdiff", dim=DIM, codebook_size=CODES, eval_mode="hard").eval()
    latents = torch.randn(7, DIM)
    output = quantizer(latents)
    codes = quantizer.indices_to_codes(output.indices)
    assert codes.shape == (7, DIM)
    if name != "sf-diveq":  # evaluation projects onto a segment; its index names the segment
        torch.testing.assert_close(codes, output.quantized)
    assert quantizer.bits_per_index == pytest.approx(math.log2(getattr(quantizer, "codebook_size", 0) or 225))


@pytest.mark.parametrize("name", ["identity", "gaussian"])
def test_continuous_bottlenecks_have_no_indices(name):
    with pytest.raises(ValueError, match="is continuous: it has no indices"):
        _build(name).indices_to_codes(torch.zeros(3, dtype=torch.int64))
    assert _build(name).bits_per_index == 0.0


@pytest.mark.parametrize("name", ["vq", "vq-ema", "rotation", "nsvq", "diveq", "vqdiff", "fsq"])
def test_quantization_math_runs_in_float32_under_autocast(name):
    torch.manual_seed(2)
    quantizer = _build(name).eval()
    if name == "vqdiff":
        quantizer = build("vqdiff", dim=DIM, codebook_size=CODES, eval_mode="hard").eval()
    latents = torch.randn(64, DIM).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(latents)
    plain = quantizer(latents.float())
    assert mixed.quantized.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.indices, plain.indices, rtol=0, atol=0)


def test_codebook_stats_of_a_huge_implicit_codebook_match_the_dense_histogram():
    from tractvq.quantizers import codebook_stats

    indices = torch.tensor([3, 3, 5, 9, 9, 9])
    dense = codebook_stats(indices, 16)
    sparse = codebook_stats(indices + 2**35, 2**36)
    assert float(sparse["perplexity"]) == pytest.approx(float(dense["perplexity"]))
    assert float(sparse["usage"]) == pytest.approx(3 / 2**36)
    assert float(dense["usage"]) == pytest.approx(3 / 16)
