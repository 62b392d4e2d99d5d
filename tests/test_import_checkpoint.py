"""Importing the state-dicts published with VQ-Diff (github.com/drewrl3v/diff-vq-vae).

The state-dicts here are built with exactly the published key names and shapes (written out
below from the published layout, independently of tractvq's own table).
"""

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tractvq.bundles import PAPER_SETTINGS
from tractvq.cli.import_checkpoint import _KINDS
from tractvq.cli.main import cli
from tractvq.errors import ModelError, OutputError
from tractvq.models import PUBLISHED_KINDS, import_published, load_model, published_layout

_COMMON = {
    "_encoder._conv_1.weight": (64, 3, 4, 4),
    "_encoder._conv_1.bias": (64,),
    "_encoder._conv_2.weight": (128, 64, 4, 4),
    "_encoder._conv_2.bias": (128,),
    "_encoder._conv_3.weight": (128, 128, 3, 3),
    "_encoder._conv_3.bias": (128,),
    "_encoder._residual_stack._layers.0._block.1.weight": (32, 128, 3, 3),
    "_encoder._residual_stack._layers.0._block.3.weight": (128, 32, 1, 1),
    "_encoder._residual_stack._layers.1._block.1.weight": (32, 128, 3, 3),
    "_encoder._residual_stack._layers.1._block.3.weight": (128, 32, 1, 1),
    "_pre_vq_conv.weight": (64, 128, 1, 1),
    "_pre_vq_conv.bias": (64,),
    "_decoder._conv_1.weight": (128, 64, 3, 3),
    "_decoder._conv_1.bias": (128,),
    "_decoder._residual_stack._layers.0._block.1.weight": (32, 128, 3, 3),
    "_decoder._residual_stack._layers.0._block.3.weight": (128, 32, 1, 1),
    "_decoder._residual_stack._layers.1._block.1.weight": (32, 128, 3, 3),
    "_decoder._residual_stack._layers.1._block.3.weight": (128, 32, 1, 1),
    "_decoder._conv_trans_1.weight": (128, 64, 4, 4),
    "_decoder._conv_trans_1.bias": (64,),
    "_decoder._conv_trans_2.weight": (64, 3, 4, 4),
    "_decoder._conv_trans_2.bias": (3,),
}
_QUANTIZER = {
    "ae": {},
    "vq": {"_vq_vae._embedding.weight": (512, 64)},
    "vqdiff": {"_vq_vae._embedding.weight": (512, 64)},
    "vq-ema": {
        "_vq_vae._embedding.weight": (512, 64),
        "_vq_vae._ema_w": (512, 64),
        "_vq_vae._ema_cluster_size": (512,),
    },
}
_OURS = {  # published quantizer key -> tractvq key
    "_vq_vae._embedding.weight": "quantizer.codebook.weight",
    "_vq_vae._ema_w": "quantizer.codebook.embedding_sum",
    "_vq_vae._ema_cluster_size": "quantizer.codebook.cluster_size",
}


def published_state_dict(kind, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {**_COMMON, **_QUANTIZER[kind]}
    return {key: 0.05 * torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def tractvq_key(key):
    if key in _OURS:
        return _OURS[key]
    if key.startswith("_pre_vq_conv."):
        return "encoder." + key
    return key.replace("_encoder.", "encoder.", 1).replace("_decoder.", "decoder.", 1)


@pytest.fixture
def write(tmp_path):
    def write(state_dict, name="published.pt"):
        torch.save(state_dict, tmp_path / name)
        return tmp_path / name

    return write


def test_the_layout_is_the_published_one():
    for kind in PUBLISHED_KINDS:
        assert published_layout(kind) == {**_COMMON, **_QUANTIZER[kind]}
    assert set(_KINDS) == set(PUBLISHED_KINDS)  # the CLI's choices, kept without torch


@pytest.mark.parametrize("kind", ["ae", "vq", "vq-ema", "vqdiff"])
def test_import_lands_every_weight(tmp_path, write, kind):
    state_dict = published_state_dict(kind)
    model = import_published(write(state_dict), kind, path_out=tmp_path / "model.pt")
    assert model.config.preset == "paper"
    assert model.config.bottleneck == PUBLISHED_KINDS[kind]
    assert model.config.grouping == PAPER_SETTINGS and model.config.grouping.minimum is None
    ours = model.state_dict()
    assert len(ours) == len(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(ours[tractvq_key(key)], value), key
    loaded, extra = load_model(tmp_path / "model.pt", return_extra=True)
    assert extra["published_kind"] == kind and extra["imported_from"] == "published.pt"
    for key, value in state_dict.items():
        assert torch.equal(loaded.state_dict()[tractvq_key(key)], value), key


def _published_forward(state_dict, groups):
    """The published AE forward pass, written as the published code is (in-place ReLUs)."""

    def conv(prefix, stride=1, padding=0, transpose=False):
        weight = state_dict[prefix + ".weight"]
        bias = state_dict.get(prefix + ".bias")
        channels = weight.shape[:2] if transpose else weight.shape[1::-1]  # (in, out)
        layer = (nn.ConvTranspose2d if transpose else nn.Conv2d)(
            *channels, weight.shape[-1], stride=stride, padding=padding, bias=bias is not None
        )
        layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
        return layer

    def stack(prefix, x):
        for index in (0, 1):
            block = nn.Sequential(
                nn.ReLU(True),
                conv(f"{prefix}._layers.{index}._block.1", padding=1),
                nn.ReLU(True),
                conv(f"{prefix}._layers.{index}._block.3"),
            )
            x = x + block(x)
        return torch.relu(x)

    x = torch.relu(conv("_encoder._conv_1", 2, 1)(groups))
    x = torch.relu(conv("_encoder._conv_2", 2, 1)(x))
    x = stack("_encoder._residual_stack", conv("_encoder._conv_3", 1, 1)(x))
    z = conv("_pre_vq_conv")(x)
    x = stack("_decoder._residual_stack", conv("_decoder._conv_1", 1, 1)(z))
    x = torch.relu(conv("_decoder._conv_trans_1", 2, 1, transpose=True)(x))
    return conv("_decoder._conv_trans_2", 2, 1, transpose=True)(x)


def test_imported_ae_computes_the_published_function(write):
    state_dict = published_state_dict("ae", seed=3)
    model = import_published(write(state_dict), "ae")
    groups = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(groups).reconstruction, _published_forward(state_dict, groups))


def test_strict_key_and_shape_check(write):
    good = published_state_dict("vq")
    missing = dict(good)
    del missing["_decoder._conv_1.bias"]
    extra = {**good, "_vq_vae._ema_w": torch.zeros(512, 64)}
    wrong = {**good, "_pre_vq_conv.weight": torch.zeros(32, 128, 1, 1)}
    cases = [
        (missing, "missing key(s): _decoder._conv_1.bias"),
        (extra, "unexpected key(s): _vq_vae._ema_w"),
        (wrong, "_pre_vq_conv.weight (shape (32, 128, 1, 1), expected (64, 128, 1, 1))"),
        ({**good, "_pre_vq_conv.bias": torch.zeros(64, dtype=torch.long)}, "_pre_vq_conv.bias (dtype torch.int64"),
        (published_state_dict("ae"), "missing key(s): _vq_vae._embedding.weight"),
    ]
    for state_dict, message in cases:
        with pytest.raises(ModelError) as error:
            import_published(write(state_dict), "vq")
        assert "published.pt" in str(error.value) and message in str(error.value)
        assert "is not a published VQ-Diff 'vq' state-dict" in str(error.value)
    both = {**missing, "_extra.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"missing key\(s\): _decoder._conv_1.bias; unexpected key\(s\): _extra.weight"):
        import_published(write(both), "vq")


def test_non_state_dicts_are_refused(tmp_path, write):
    with pytest.raises(ModelError, match="holds a Tensor, not a state-dict"):
        import_published(write(torch.zeros(3)), "ae")
    with pytest.raises(ModelError, match="does not exist"):
        import_published(tmp_path / "missing.pt", "ae")
    with pytest.raises(ValueError, match="choose one of: ae, vq, vq-ema, vqdiff"):
        import_published(write(published_state_dict("ae")), "vae")


def test_existing_output_is_checked_before_reading(tmp_path, write):
    (tmp_path / "model.pt").write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists"):
        import_published(tmp_path / "missing.pt", "ae", path_out=tmp_path / "model.pt")
    assert (tmp_path / "model.pt").read_bytes() == b"keep"


def test_cli(tmp_path, write):
    runner = CliRunner()
    source, output = write(published_state_dict("vq-ema")), tmp_path / "model.pt"
    arguments = ["import-checkpoint", str(source), "--kind", "vq-ema", "-o", str(output)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert output.is_file() and load_model(output).config.bottleneck == "vq-ema"

    result = runner.invoke(cli, arguments)
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert runner.invoke(cli, [*arguments, "--force"]).exit_code == 0

    broken = published_state_dict("vq-ema")
    del broken["_vq_vae._ema_w"]
    result = runner.invoke(cli, ["import-checkpoint", str(write(broken, "broken.pt")), "--kind", "vq-ema", "-o", str(tmp_path / "other.pt")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "_vq_vae._ema_w" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "other.pt").exists()

    result = runner.invoke(cli, ["import-checkpoint", str(source), "--kind", "vae", "-o", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "vae" in result.stderr
