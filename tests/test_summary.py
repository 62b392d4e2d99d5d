import json

import nibabel as nib
import numpy as np
import pytest

from tractvq import io
from tractvq.errors import TractogramError
from tractvq.summary import format_summaries, summarize


def _summary(path, reference=None):
    return summarize(io.find_tractograms(path)[0], reference)


def test_summary_of_a_real_bundle(sample_bundle):
    summary = _summary(sample_bundle)
    assert summary["subject"] == "sub-vqdiff" and summary["bundle"] == "POPT_R"
    assert summary["format"] == "trk" and summary["streamlines"] == 192
    assert summary["points"] == [64, 64, 64]
    low, median, high = summary["length_mm"]
    assert 100 < low <= median <= high < 200
    assert summary["space"]["voxel_order"] == "RAS" and summary["space"]["dimensions"] == [256, 256, 256]
    assert (summary["out_of_box"], summary["non_finite"], summary["degenerate"]) == (0, 0, 0)
    points = np.asarray(io.load(sample_bundle).streamlines.get_data())
    np.testing.assert_allclose(summary["bbox_mm"], [points.min(axis=0), points.max(axis=0)], atol=1e-4)
    json.dumps(summary)


def test_out_of_box_streamlines_are_counted_not_refused(fornix):
    summary = _summary(fornix)
    assert summary["streamlines"] == 300
    assert 0 < summary["out_of_box"] <= 300


def test_problem_streamlines_are_counted(tmp_path):
    streamlines = [np.linspace([0, 0, 0], [9, 9, 9], 5), np.array([[1.0, 1, 1]]),
                   np.array([[0, 0, 0], [np.nan, 0, 0], [1, 1, 1.0]])]
    tractogram = nib.streamlines.Tractogram([s.astype(np.float32) for s in streamlines], affine_to_rasmm=np.eye(4))
    header = {nib.streamlines.Field.VOXEL_TO_RASMM: np.eye(4), nib.streamlines.Field.DIMENSIONS: (20, 20, 20),
              nib.streamlines.Field.VOXEL_SIZES: (1, 1, 1), nib.streamlines.Field.VOXEL_ORDER: "RAS"}
    path = tmp_path / "broken.trk"
    nib.streamlines.save(tractogram, str(path), header=header)
    summary = _summary(path)
    assert (summary["streamlines"], summary["non_finite"], summary["degenerate"]) == (3, 1, 1)
    assert summary["points"] == [1, 3, 5]
    assert "1 non-finite, 1 < 2 points" in format_summaries([summary])


def test_empty_tractogram_is_summarised(nibabel_data):
    summary = _summary(nibabel_data / "empty.trk")
    assert summary["streamlines"] == 0 and summary["points"] is None and summary["bbox_mm"] is None


def test_published_arrays_say_their_assumed_scale(tmp_path):
    np.save(tmp_path / "MCP.npy", np.linspace(-0.5, 0.5, 2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64))
    summary = _summary(tmp_path / "MCP.npy")
    assert summary["space"]["assumed_mm_per_unit"] == 100.0
    assert "100 mm per unit assumed" in format_summaries([summary])


def test_table_lists_every_bundle_of_the_sample(sample_root):
    text = format_summaries([summarize(record) for record in io.find_tractograms(sample_root)])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["subject", "bundle", "streamlines"]
    assert len([line for line in lines if line.startswith("sub-vqdiff")]) == 12
    assert lines[-1] == "12 file(s), 12416 streamlines"


def test_a_tck_needs_its_reference(nibabel_data):
    with pytest.raises(TractogramError, match="carry no spatial reference"):
        _summary(nibabel_data / "standard.tck")
    assert _summary(nibabel_data / "standard.tck", nibabel_data / "standard.trk")["streamlines"] == 120
