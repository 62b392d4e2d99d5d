"""tractvq.viz: headless FURY renders of real bundles, colourings, framing, latent maps, strips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tractvq
from tractvq import io
from tractvq.encoding import group_for_model
from tractvq.errors import OutputError, TractogramError, TractvqError
from tractvq.robustness import PUBLISHED_ALPHAS, perturbation_study
from tractvq.viz import backend
from tractvq.viz.camera import VIEWS, frame_camera, view_axes
from tractvq.viz.colours import orientation_colours, streamline_errors
from tractvq.viz.images import save_image
from tractvq.viz.inputs import group_label, group_streamlines, load_bundle, parse_group
from tractvq.viz.latent_map import latent_map, nearest_neighbours, tsne_embedding
from tractvq.viz.render import bundle_actor, bundle_scene, compare, render_bundle, render_panels
from tractvq.viz.strip import perturbation_strip

SIZE = (160, 120)  # width, height: small, so CI stays fast


def drawn(image: np.ndarray, background=(255, 255, 255)) -> np.ndarray:
    """Mask of the pixels that are not background."""
    return np.abs(image.astype(np.int16) - np.asarray(background, np.int16)).max(axis=2) > 24


@pytest.fixture(scope="module")
def popt(sample_bundle):
    return [np.asarray(s) for s in io.load(sample_bundle).streamlines]


@pytest.fixture(scope="module")
def pyt(sample_bundle):
    return [np.asarray(s) for s in io.load(sample_bundle.with_name("sub-vqdiff__PYT_R.trk")).streamlines]


@pytest.fixture(scope="module")
def model():
    return tractvq.load_model("default")


@pytest.fixture(scope="module")
def reconstruction(sample_bundle, model):
    groups, decoded = tractvq.reconstruct([sample_bundle], model)
    (streamlines,) = groups.to_streamlines(decoded)
    return list(streamlines)


@pytest.fixture(scope="module")
def two_bundles(sample_bundle, model):
    """POPT_R (3 groups) and PYT_R (5 groups), grouped for the default model."""
    return group_for_model(io.find_tractograms(sample_bundle, sample_bundle.with_name("sub-vqdiff__PYT_R.trk")), model)


def test_import_tractvq_viz_loads_no_renderer():
    code = "import sys, tractvq.viz, tractvq.cli.main; print(sorted(m for m in ('fury', 'pygfx', 'wgpu', 'matplotlib', 'sklearn') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["fury", "pygfx", "matplotlib"])
def test_a_missing_viz_dependency_names_the_extra(monkeypatch, popt, module):
    monkeypatch.setitem(sys.modules, module, None)  # what an installation without it does on import
    with pytest.raises(backend.MissingExtraError, match=r'pip install "tractvq\[viz\]"') as caught:
        render_bundle(popt, size=SIZE)
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, TractvqError)
    assert f"needs {module}" in str(caught.value)


def test_a_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(backend.MissingExtraError, match=r"latent map needs scikit-learn.*tractvq\[viz\]"):
        tsne_embedding(np.zeros((8, 4)))


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_bundle_is_drawn_centred_and_framed(popt, view):
    image = render_bundle(popt, view=view, size=SIZE)
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    mask = drawn(image)
    assert mask.sum() > 0.05 * mask.size  # a bundle, not a few stray pixels
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # inside the frame: nothing cut at an edge
    assert rows[0] > 0 and columns[0] > 0 and rows[-1] < SIZE[1] - 1 and columns[-1] < SIZE[0] - 1
    # fills the frame along one side (up to the 5% margins), and is centred
    height, width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    assert max(height / SIZE[1], width / SIZE[0]) > 0.8
    assert abs((rows[0] + rows[-1]) / 2 - (SIZE[1] - 1) / 2) <= 4
    assert abs((columns[0] + columns[-1]) / 2 - (SIZE[0] - 1) / 2) <= 4


def test_views_and_bundles_give_different_images(popt, pyt):
    images = {view: render_bundle(popt, view=view, size=SIZE).astype(np.int16) for view in VIEWS}
    other = render_bundle(pyt, view="sagittal", size=SIZE).astype(np.int16)
    pairs = [(images["sagittal"], images["axial"]), (images["axial"], images["coronal"]),
             (images["sagittal"], images["coronal"]), (images["sagittal"], other)]
    for first, second in pairs:
        assert np.mean(drawn(first.astype(np.uint8)) != drawn(second.astype(np.uint8))) > 0.05


@pytest.mark.parametrize(
    ("view", "red", "blue", "along", "axis", "red_first"),
    [
        ("axial", (20, 0, 0), (-20, 0, 0), 1, 1, False),      # the subject's right on the image's right
        ("axial", (0, 20, 0), (0, -20, 0), 0, 0, True),       # anterior up
        ("sagittal", (0, 20, 0), (0, -20, 0), 2, 1, True),    # anterior on the left
        ("sagittal", (0, 0, 20), (0, 0, -20), 1, 0, True),    # superior up
        ("coronal", (20, 0, 0), (-20, 0, 0), 2, 1, False),    # the subject's right on the right
        ("coronal", (0, 0, 20), (0, 0, -20), 0, 0, True),     # superior up
    ],
)
def test_standard_views_follow_the_documented_conventions(view, red, blue, along, axis, red_first):
    line = np.zeros((20, 3))
    line[:, along] = np.linspace(-30, 30, 20)
    streamlines = [line + red, line + blue]
    image = render_bundle(streamlines, view=view, size=(96, 96), colours=np.array([[1, 0, 0], [0, 0, 1]]), thickness=4)
    is_red = (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] < 90)
    is_blue = (image[..., 2] > 180) & (image[..., 0] < 90) & (image[..., 1] < 90)
    assert is_red.sum() > 20 and is_blue.sum() > 20
    red_at, blue_at = np.nonzero(is_red)[axis].mean(), np.nonzero(is_blue)[axis].mean()
    assert (red_at < blue_at) == red_first


def test_view_axes_are_right_handed():
    for view in VIEWS:
        forward, up, right = view_axes(view)
        assert np.isclose(np.dot(forward, up), 0) and np.allclose(np.cross(forward, up), right)
    with pytest.raises(ValueError, match="sagittal, axial, coronal"):
        view_axes("oblique")


def test_the_line_actor_lies_where_its_points_are(popt):
    actor = bundle_actor(popt)
    points = np.concatenate(popt)
    assert np.allclose(actor.get_world_bounding_box(), [points.min(axis=0), points.max(axis=0)], atol=1e-3)


def test_orientation_colours_are_absolute_unit_directions():
    along_x = np.stack([np.linspace(-5, 5, 8), np.zeros(8), np.zeros(8)], axis=1)
    diagonal = np.stack([np.zeros(8), np.linspace(3, -3, 8), np.linspace(-3, 3, 8)], axis=1)
    first, second = orientation_colours([along_x, diagonal])
    assert np.allclose(first, [1, 0, 0]) and np.allclose(second, [0, np.sqrt(0.5), np.sqrt(0.5)])


def test_streamline_errors_are_mdf_in_mm(popt):
    shifted = [s + [0.0, 2.0, 0.0] for s in popt]
    assert np.allclose(streamline_errors(popt, popt), 0)
    assert np.allclose(streamline_errors(popt, shifted), 2.0)
    assert np.allclose(streamline_errors(popt, [s[::-1] for s in shifted]), 2.0)  # MDF ignores direction
    with pytest.raises(ValueError, match="same streamlines in the same order"):
        streamline_errors(popt, popt[:-1])


def test_side_by_side_panels_share_one_frame(popt):
    image = compare(popt, [popt], size=SIZE, titles=["", ""]).render(gap=0)
    assert image.shape == (SIZE[1], 2 * SIZE[0], 3)
    assert np.array_equal(image[:, :SIZE[0]], image[:, SIZE[0]:])


def test_error_colouring_differs_from_orientation_and_has_a_colour_bar(popt, reconstruction):
    by_orientation = compare(popt, [reconstruction], size=SIZE)
    by_error = compare(popt, [reconstruction], colouring="error", size=SIZE)
    assert len(by_error.errors) == 1 and by_error.errors[0].shape == (len(popt),)
    assert 0.5 < np.median(by_error.errors[0]) < 20  # mm: a reconstruction, not noise
    assert by_error.error_max == pytest.approx(np.percentile(by_error.errors[0], 98))
    first, second = by_orientation.render(), by_error.render()
    assert first.shape[1] == second.shape[1] and second.shape[0] > first.shape[0]  # the colour bar
    (original, by_direction), (grey, by_mdf) = by_orientation.render_panels(), by_error.render_panels()
    assert drawn(by_direction).sum() > 200 and drawn(by_mdf).sum() > 200
    mean_direction = by_direction[drawn(by_direction)].mean(axis=0)
    mean_mdf = by_mdf[drawn(by_mdf)].mean(axis=0)
    assert np.abs(mean_direction - mean_mdf).max() > 20
    assert np.median(np.ptp(grey[drawn(grey)].astype(int), axis=1)) < 12  # the original in grey
    assert np.median(np.ptp(original[drawn(original)].astype(int), axis=1)) > 60  # and in colour before


def test_error_scale_and_counts_are_checked(popt, reconstruction):
    with pytest.raises(ValueError, match="needs at least one reconstruction"):
        compare(popt, colouring="error")
    with pytest.raises(ValueError, match="same streamlines in the same order"):
        compare(popt, [reconstruction[:-3]], colouring="error")
    fixed = compare(popt, [reconstruction], colouring="error", error_max=50.0, size=SIZE)
    assert fixed.error_max == 50.0


def test_overlay_is_one_panel(popt, reconstruction):
    comparison = compare(popt, [reconstruction], overlay=True, size=SIZE, background="black")
    assert len(comparison.scenes) == 1 and comparison.titles == ["original + reconstruction"]
    image = comparison.render()
    assert image.shape[1] == SIZE[0]
    assert drawn(image[-SIZE[1]:], background=(0, 0, 0)).sum() > 0.05 * SIZE[0] * SIZE[1]


def test_scenes_are_fury_scenes_that_notebooks_can_extend(popt, pyt):
    scene = bundle_scene(bundle_actor(popt), background="white")
    bundle_scene(bundle_actor(pyt), scene=scene)
    camera = frame_camera(popt + pyt, "coronal", size=SIZE)
    image = backend.offscreen_render(scene, camera, SIZE)
    alone = render_bundle(popt + pyt, view="coronal", size=SIZE)
    assert image.shape == alone.shape and np.mean(drawn(image) != drawn(alone)) < 0.02


def test_the_device_is_prepared_once_and_only_as_needed(popt):
    render_bundle(popt, size=(32, 32))
    backend.prepare_device()  # idempotent
    import pygfx

    device = pygfx.renderers.wgpu.get_shared().device
    assert ("float32-filterable" in device.features) == ("float32-filterable" in device.adapter.features)


def test_the_interactive_window_needs_a_display(monkeypatch, popt):
    comparison = compare(popt, [popt], size=SIZE)
    monkeypatch.setattr(backend, "has_display", lambda: False)
    with pytest.raises(backend.NoDisplayError, match="display"):
        comparison.show()
    framed = comparison.camera.get_state()
    manager = comparison.show(window_type="offscreen")  # the same window, drawn offscreen
    assert len(manager.screens) == 2 and all(screen.camera is comparison.camera for screen in manager.screens)
    manager.window.set_logical_size(300, 100)  # FURY re-frames at a resize; tractvq's framing stays
    manager.window.draw()
    assert manager.screens[1].viewport.rect[2:] == (150, 100)
    assert comparison.camera.width == framed["width"] and np.allclose(comparison.camera.local.position, framed["position"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland systems only")
def test_no_display_without_display_variables(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert backend.has_display() is False


def test_panels_are_titled_and_can_be_trimmed(popt, pyt):
    full = render_panels([popt, pyt], titles=["POPT_R", "PYT_R"], size=SIZE, gap=4)
    assert full.shape[1] == 2 * SIZE[0] + 4 and full.shape[0] > SIZE[1]  # a band of titles above
    flat = [s * [1.0, 1.0, 0.1] for s in popt]  # a flat bundle leaves empty rows in a square panel
    trimmed = render_panels([flat], size=(120, 120), view="sagittal", trim=True)
    assert trimmed.shape[0] < 80


def test_save_image_never_overwrites_silently(tmp_path, popt):
    image = render_bundle(popt, size=(48, 32))
    path = save_image(image, tmp_path / "bundle.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), image)
    with pytest.raises(OutputError, match="already exists"):
        save_image(image, path)
    save_image(image[::-1], path, force=True)
    assert np.array_equal(np.asarray(Image.open(path)), image[::-1])
    with pytest.raises(OutputError, match="unsupported image format"):
        save_image(image, tmp_path / "bundle.gif")


def test_load_bundle_from_files_folders_and_codes(sample_root, sample_bundle, tmp_path, model):
    assert load_bundle(sample_bundle).label == sample_bundle.name
    mcp = load_bundle(sample_root, bundle="MCP")
    assert mcp.label == "MCP (sample)" and len(mcp.streamlines) == 1728
    with pytest.raises(TractogramError, match="holds 12 bundles .*--bundle NAME"):
        load_bundle(sample_root)
    with pytest.raises(TractogramError, match="has no bundle 'AF_L'"):
        load_bundle(sample_root, bundle="AF_L")
    codes = tractvq.encode([sample_bundle], model)
    codes.save(tmp_path / "codes.npz")
    decoded = load_bundle(tmp_path / "codes.npz", model=model)
    assert decoded.label == "POPT_R (codes.npz)" and len(decoded.streamlines) == 192


def test_groups_are_named_bundle_index(two_bundles):
    assert parse_group(two_bundles, None) == 0
    assert parse_group(two_bundles, "PYT_R") == parse_group(two_bundles, "PYT_R:0") == 3
    assert group_label(two_bundles, parse_group(two_bundles, "PYT_R:4")) == "PYT_R:4"
    with pytest.raises(ValueError, match=r"no bundle 'MCP' \(bundles: POPT_R \(3 groups\), PYT_R \(5 groups\)\)"):
        parse_group(two_bundles, "MCP:0")
    with pytest.raises(ValueError, match="has 5 groups"):
        parse_group(two_bundles, "PYT_R:5")
    assert group_streamlines(two_bundles, 2).shape == (two_bundles.mask[2].sum(), 64, 3)


def test_nearest_neighbours_exclude_the_query():
    latents = np.array([[0.0], [1.0], [-1.5], [3.0], [0.5]])
    indices, distances = nearest_neighbours(latents, 0, 3)
    assert indices.tolist() == [4, 1, 2] and np.allclose(distances, [0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="between 1 and 4"):
        nearest_neighbours(latents, 0, 5)


def test_tsne_is_seeded():
    latents = np.random.default_rng(0).standard_normal((24, 16))
    first, again, other = (tsne_embedding(latents, seed=seed) for seed in (0, 0, 1))
    assert first.shape == (24, 2) and np.array_equal(first, again) and not np.allclose(first, other)


@pytest.mark.slow
def test_latent_map_of_real_groups(two_bundles, model):
    result = latent_map(two_bundles, model, query="PYT_R:1", neighbours=3, seed=0, panel_size=(96, 96))
    query = parse_group(two_bundles, "PYT_R:1")
    assert result.query == query and query not in result.neighbours and len(result.neighbours) == 3
    assert np.all(np.diff(result.distances) >= 0) and result.embedding.shape == (8, 2)
    assert result.labels[query] == "PYT_R:1" and result.bundles.count("POPT_R") == 3
    assert result.image.ndim == 3 and result.image.shape[1] >= 4 * 96
    again = latent_map(two_bundles, model, query="PYT_R:1", neighbours=3, seed=0, panel_size=(96, 96))
    assert np.array_equal(result.embedding, again.embedding) and np.array_equal(result.image, again.image)


@pytest.mark.slow
def test_perturbation_strip_shows_the_sweep(two_bundles, model):
    popt = two_bundles.select(np.flatnonzero(two_bundles.bundle_index == 0))
    result = perturbation_study(popt, model, [0.5], alphas=PUBLISHED_ALPHAS, seed=0)
    strip = perturbation_strip(popt, result, group="POPT_R:1", size=(64, 64))
    assert strip.shape[1] == 10 * 64 + 9 * 4  # the original and the nine published steps
    panels = [strip[:, i * 68: i * 68 + 64] for i in range(10)]
    assert all(drawn(panel).sum() > 30 for panel in panels)
    assert np.mean(drawn(panels[1]) != drawn(panels[9])) > 0.02  # alpha -1 and +1 decode differently
    gaussian = perturbation_strip(popt, result, kind="gaussian", include_original=False, size=(64, 64))
    assert gaussian.shape[1] == 64
    with pytest.raises(ValueError, match="holds no directional"):
        perturbation_strip(popt, perturbation_study(popt, model, [0.5], alphas=None, seed=0))
