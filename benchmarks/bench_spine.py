"""Time tractvq's data spine against DIPY's load + resample on a whole-brain-sized tractogram.

Usage::

    python benchmarks/bench_spine.py [--streamlines 40000] [--repeats 3] [--seed 0]

Makes a synthetic whole-brain-sized ``.trk`` in a temporary folder (smooth random curves of
20-200 mm at a 0.5 mm step, 40-400 points each, inside a 1 mm 182x218x182 grid), then times
(best of ``--repeats``, interleaved):

* DIPY alone: ``load_tractogram`` + ``set_number_of_points`` to 64 points;
* tractvq: ``tractvq.io.load`` -> ``tractvq.bundles.group`` (spatial grouping, orientation,
  canonical order, normalisation) -> the ``(G, 3, 64, 64)`` float32 tensor;

and prints both and their ratio. Goal: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamline import set_number_of_points

from tractvq import bundles, io

GRID = (182, 218, 182)  # MNI 1 mm


def make_whole_brain(path: Path, count: int, rng: np.random.Generator) -> int:
    """Write ``count`` smooth random streamlines to ``path``; return the number of points."""
    step = 0.5
    lengths_mm = rng.uniform(20, 200, count)
    n_points = np.maximum((lengths_mm / step).astype(int), 2)
    centre = np.array(GRID) / 2
    start = centre + rng.normal(0, 25, (count, 3))
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    streamlines = []
    for index in range(count):
        turns = np.cumsum(rng.normal(0, 0.05, (n_points[index], 3)), axis=0) + direction[index]
        turns /= np.linalg.norm(turns, axis=1, keepdims=True)
        streamlines.append((start[index] + np.cumsum(turns * step, axis=0)).astype(np.float32))
    affine = np.eye(4)
    header = {
        nib.streamlines.Field.VOXEL_TO_RASMM: affine,
        nib.streamlines.Field.DIMENSIONS: GRID,
        nib.streamlines.Field.VOXEL_SIZES: (1.0, 1.0, 1.0),
        nib.streamlines.Field.VOXEL_ORDER: "RAS",
    }
    nib.streamlines.save(nib.streamlines.Tractogram(streamlines, affine_to_rasmm=affine), str(path), header=header)
    return int(n_points.sum())


def dipy_load_and_resample(path: Path) -> np.ndarray:
    tractogram = load_tractogram(str(path), "same", bbox_valid_check=False)
    return set_number_of_points(tractogram.streamlines, nb_points=64)


def tractvq_spine(path: Path) -> np.ndarray:
    return bundles.group(io.load(path), bundles.GroupingSettings(), name="brain").data


def best_times(functions, path: Path, repeats: int) -> list[float]:
    """Best wall time of each function, the runs interleaved so that load on the machine
    affects all alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, spent in zip(functions, times):
            start = time.perf_counter()
            function(path)
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streamlines", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "whole_brain.trk"
        points = make_whole_brain(path, arguments.streamlines, np.random.default_rng(arguments.seed))
        print(f"tractogram: {arguments.streamlines} streamlines, {points} points, {path.stat().st_size / 2**20:.0f} MiB")
        groups = tractvq_spine(path)
        print(f"groups tensor: {groups.shape} {groups.dtype}")
        dipy_seconds, tractvq_seconds = best_times((dipy_load_and_resample, tractvq_spine), path, arguments.repeats)
    print(f"DIPY load + resample:          {dipy_seconds:.3f} s")
    print(f"tractvq load -> groups tensor: {tractvq_seconds:.3f} s")
    print(f"ratio: {tractvq_seconds / dipy_seconds:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
