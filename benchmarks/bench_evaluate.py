"""Time tractvq's BUAN against a plain sequential loop of DIPY's ``bundle_shape_similarity``.

Usage::

    python benchmarks/bench_evaluate.py [--sigma 3.0] [--threshold 6.0] [--repeats 2] [--seed 0]

Groups all bundles of the shipped sample subject (spatial grouping, 64 streamlines of 64
points), makes a "reconstruction" of every group by adding Gaussian noise of ``--sigma`` mm
per coordinate (so that scores are not trivially 1), and scores every group in millimetres
with ``clust_thr=[0]`` (best of ``--repeats``, interleaved):

* DIPY: ``bundle_shape_similarity(original, reconstruction, rng, clust_thr=[0], threshold=...)``
  per group in a Python loop (:func:`tractvq.buan.buan_scores_dipy`);
* tractvq: :func:`tractvq.buan.buan_scores` (batched resampling, DIPY's MDF per group,
  DIPY itself for the groups too close to the threshold; processes over chunks of groups
  on large inputs).

Prints both, the ratio and whether the scores are identical. Goal: ratio >= 5 with identical
scores. Where DIPY's time goes with 64 streamlines and ``clust_thr=[0]``: not the distances
but Python overhead around them, two QuickBundlesX runs per bundle building a
``ClusterCentroid`` object per streamline, and DIPY's keyword-deprecation decorator calling
``inspect.signature`` on every one of those calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tractvq import io
from tractvq.buan import buan_scores, buan_scores_dipy
from tractvq.bundles import GroupedBundles, GroupingSettings, group

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=3.0, help="noise of the reconstruction, mm per coordinate")
    parser.add_argument("--threshold", type=float, default=6.0, help="BUAN threshold, mm")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    records = io.find_tractograms(SAMPLE)
    groups = GroupedBundles.concatenate([
        group(io.read_record(record), GroupingSettings(), subject=record.subject, name=record.bundle) for record in records
    ])
    points = groups.denormalize()  # (G, S, P, 3) mm
    originals = [points[g][groups.mask[g]] for g in range(len(groups))]
    rng = np.random.default_rng(arguments.seed)
    reconstructions = [original + rng.normal(0.0, arguments.sigma, original.shape) for original in originals]
    print(f"{len(records)} bundles, {len(groups)} groups, {sum(map(len, originals))} streamlines;"
          f" noise {arguments.sigma} mm, threshold {arguments.threshold} mm, clust_thr=[0]")

    dipy_times, tractvq_times = [], []
    for _ in range(arguments.repeats):
        start = time.perf_counter()
        reference = buan_scores_dipy(originals, reconstructions, threshold=arguments.threshold, seed=arguments.seed)
        dipy_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scores, fallbacks = buan_scores(
            originals, reconstructions, threshold=arguments.threshold, seed=arguments.seed, return_fallbacks=True
        )
        tractvq_times.append(time.perf_counter() - start)
    dipy_time, tractvq_time = min(dipy_times), min(tractvq_times)
    print(f"DIPY sequential loop : {dipy_time:8.3f} s  ({dipy_time / len(groups) * 1e3:.2f} ms/group)")
    print(f"tractvq buan_scores  : {tractvq_time:8.3f} s  ({tractvq_time / len(groups) * 1e3:.2f} ms/group,"
          f" {fallbacks} group(s) scored by DIPY itself)")
    print(f"ratio                : {dipy_time / tractvq_time:8.1f}x")
    print(f"identical scores     : {np.array_equal(scores, reference)}  (mean BUAN {reference.mean():.5f})")


if __name__ == "__main__":
    main()
