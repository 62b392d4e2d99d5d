"""``tractvq render``, ``tractvq latent-map`` and ``tractvq perturb --render`` in-process, headless."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tractvq.cli.main import cli
from tractvq.cli.render import COLOUR_CHOICES, VIEW_CHOICES
from tractvq.viz import backend
from tractvq.viz.camera import VIEWS
from tractvq.viz.render import COLOURINGS


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def codes(sample_bundle, tmp_path_factory):
    """POPT_R encoded with the shipped default model."""
    path = tmp_path_factory.mktemp("codes") / "codes.npz"
    result = CliRunner().invoke(cli, ["encode", str(sample_bundle), "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


def test_cli_choices_are_the_library_ones():
    assert VIEW_CHOICES == tuple(VIEWS) and COLOUR_CHOICES == COLOURINGS


def test_render_original_and_decoded_codes(runner, sample_bundle, codes, tmp_path):
    output = tmp_path / "popt.png"
    arguments = ["render", str(sample_bundle), str(codes), "-o", str(output), "--size", "120", "96", "--view", "axial"]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(output))
    assert image.shape[1] == 2 * 120 + 4 and image.shape[0] > 96  # two panels under their titles
    left, right = image[-96:, :120], image[-96:, 124:]
    assert (left < 230).any(axis=2).sum() > 300 and (right < 230).any(axis=2).sum() > 300
    assert not np.array_equal(left, right)  # the reconstruction is not the original
    again = runner.invoke(cli, arguments)
    assert "already exists" in one_line_error(again)
    assert np.array_equal(np.asarray(Image.open(output)), image)  # left alone
    forced = runner.invoke(cli, [*arguments, "--force", "--color", "error"])
    assert forced.exit_code == 0, forced.output
    assert np.asarray(Image.open(output)).shape[0] > image.shape[0]  # now with a colour bar


def test_render_a_bundle_of_a_folder(runner, sample_root, tmp_path):
    output = tmp_path / "pyt.png"
    result = runner.invoke(cli, ["render", str(sample_root), "--bundle", "PYT_R", "-o", str(output), "--size", "64", "64",
                                 "--background", "black", "--title", "PYT_R"])
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(output))
    assert image.shape[1] == 64 and (image[-64:] > 40).any(axis=2).sum() > 100
    assert "holds 12 bundles" in one_line_error(runner.invoke(cli, ["render", str(sample_root), "-o", str(tmp_path / "x.png")]))
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{bundle}"], "give an image to write"),
        (["{bundle}", "--color", "error", "-o", "{tmp}/e.png"], "needs a reconstruction"),
        (["{bundle}", "{bundle}", "--title", "one", "-o", "{tmp}/t.png"], "--title given 1 times for 2 inputs"),
        (["{bundle}", "-o", "{tmp}/b.png", "--background", "nocolour"], "not a colour"),
        (["{bundle}", "-o", "{tmp}/s.png", "--size", "8", "8"], "16 to 8192 pixels"),
        (["{bundle}", "-o", "{tmp}/s.gif"], "unsupported image format"),
    ],
)
def test_render_usage_errors(runner, sample_bundle, tmp_path, arguments, message):
    arguments = [argument.format(bundle=sample_bundle, tmp=tmp_path) for argument in arguments]
    result = runner.invoke(cli, ["render", *arguments])
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


def test_error_colouring_needs_matching_streamlines(runner, sample_bundle, tmp_path):
    other = sample_bundle.with_name("sub-vqdiff__PYT_R.trk")
    message = one_line_error(runner.invoke(cli, ["render", str(sample_bundle), str(other), "--color", "error",
                                                 "-o", str(tmp_path / "e.png")]))
    assert "PYT_R.trk: holds 320 streamlines" in message and "192" in message


def test_interactive_without_a_display_says_so(runner, sample_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "has_display", lambda: False)
    result = runner.invoke(cli, ["render", str(sample_bundle), "--interactive", "-o", str(tmp_path / "i.png")])
    assert "no display: an interactive window needs a graphical display" in one_line_error(result)
    assert not (tmp_path / "i.png").exists()


@pytest.mark.parametrize("command", [["render", "{bundle}", "-o", "{tmp}/r.png"],
                                     ["latent-map", "{bundle}", "-o", "{tmp}/m.png"],
                                     ["perturb", "{bundle}", "--render", "-o", "{tmp}/p"]])
def test_without_the_viz_extra_the_commands_name_it(runner, sample_bundle, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "fury", None)  # as if fury were not installed
    result = runner.invoke(cli, [argument.format(bundle=sample_bundle, tmp=tmp_path) for argument in command])
    message = one_line_error(result)
    assert "needs fury, which is not installed" in message and 'pip install "tractvq[viz]"' in message
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_latent_map_command(runner, sample_bundle, tmp_path):
    pyt = sample_bundle.with_name("sub-vqdiff__PYT_R.trk")
    output = tmp_path / "map.png"
    arguments = ["latent-map", str(sample_bundle), str(pyt), "-o", str(output), "--query", "PYT_R:2", "-k", "3",
                 "--panel-size", "80", "80", "--seed", "1"]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert "query PYT_R:2; nearest in latent space: " in result.output and result.output.count("(") == 3
    image = np.asarray(Image.open(output))
    assert image.shape[1] >= 4 * 80 and image.shape[0] > 200
    assert "already exists" in one_line_error(runner.invoke(cli, arguments))
    bad = runner.invoke(cli, [*arguments[:-2], "--query", "PYT_R:9", "--force"])
    assert bad.exit_code == 2 and "bundle PYT_R has 5 groups" in bad.output


@pytest.mark.slow
def test_perturb_renders_the_strips(runner, sample_bundle, tmp_path):
    output = tmp_path / "perturb"
    arguments = ["perturb", str(sample_bundle), "--eps", "0.5", "--no-permutation", "--no-bundles", "--render",
                 "--render-group", "POPT_R:2", "--render-size", "64", "64", "-o", str(output)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    directional = np.asarray(Image.open(output / "strip_directional.png"))
    gaussian = np.asarray(Image.open(output / "strip_gaussian.png"))
    assert directional.shape[1] == 10 * 64 + 9 * 4 and gaussian.shape[1] == 2 * 64 + 4
    bad = runner.invoke(cli, [*arguments[:-2], "--render-group", "MCP", "-o", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "no bundle 'MCP'" in bad.output and not (tmp_path / "other").exists()
