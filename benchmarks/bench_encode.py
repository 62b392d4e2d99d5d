"""Time ``tractvq encode`` end to end against DIPY's load + resample on a whole-brain-sized
tractogram.

Usage::

    python benchmarks/bench_encode.py [--model default] [--streamlines 36000] [--repeats 3]

Makes the synthetic whole-brain ``.trk`` of ``bench_spine.py`` (>= 36,000 streamlines of
20-200 mm), then times (best of ``--repeats``, interleaved): DIPY's ``load_tractogram`` +
``set_number_of_points`` to 64 points, and :func:`tractvq.encode` with the model (load,
resample, group, normalise, encode every group) followed by writing the codes file. Prints
both and the ratio. Goal: ratio <= 2.0.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_spine import best_times, dipy_load_and_resample, make_whole_brain

import tractvq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file or shipped name")
    parser.add_argument("--streamlines", type=int, default=36_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    model = tractvq.load_model(arguments.model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "whole_brain.trk"
        make_whole_brain(path, arguments.streamlines, np.random.default_rng(arguments.seed))

        def encode_to_file(source: Path) -> None:
            tractvq.encode([source], model).save(Path(folder) / "codes.npz", force=True)

        encode_to_file(path)  # warm-up (first use of the model's kernels)
        codes = tractvq.Codes.load(Path(folder) / "codes.npz")
        print(f"{arguments.streamlines} streamlines -> {len(codes.layout)} groups, codes {codes.nbytes / 2**20:.2f} MiB"
              f" ({model.config.preset} + {model.config.bottleneck}, {torch.get_num_threads()} threads)")
        dipy_seconds, tractvq_seconds = best_times((dipy_load_and_resample, encode_to_file), path, arguments.repeats)
    print(f"DIPY load + resample:   {dipy_seconds:.3f} s")
    print(f"tractvq encode to file: {tractvq_seconds:.3f} s")
    print(f"ratio: {tractvq_seconds / dipy_seconds:.2f} (goal <= 2.0)")


if __name__ == "__main__":
    main()
