"""Models and baseline codecs on data the models never saw: one table.

Usage::

    python benchmarks/bench_generalisation.py [--shared ../shared/data] [-m default -m discrete]
        [--baseline pca-16 ...] [--per-bundle 256] [--seed 0]

The PCA baselines are fitted on the training split of the shipped models' training cache
(:func:`tractvq.cache.prepare` of both HCP atlases with the bundle types HCP-1065 lacks held
out): the same data the models were trained on. Every model (``-m``) and baseline is then scored with
:func:`tractvq.bench.rate_distortion.score_rate_distortion` (each model's own grouping;
BUAN at 5 mm, ``clust_thr`` 0) on these held-out sources:

``sample``
    an unseen individual: the repository's ``data/sample`` subject (TractoInferno);
``pyafq``
    an unseen individual in native space: ``SHARED/pyafq_subject/*.trx``, its TRX groups
    (ARC_L, ARC_R) as bundles;
``unseen-bundles``
    unseen bundle types: the HCP-842 bundles HCP-1065 lacks (:data:`HELD_OUT`), at most
    ``--per-bundle`` streamlines each (seeded);
``sparse-hcp842``, ``sparse-sample``
    sparse whole-brain sets: 4 seeded subsets of 500 streamlines of all HCP-842 bundles
    together, and of all ``data/sample`` bundles together (the 4 scored as one set).

Prints one table (rows: source x codec; bytes per streamline, mean MDF, max MDF as the mean
over groups of each group's largest, BUAN at 5 mm), then the PCA-16 mean MDF next to the
values measured when the held-out sets were designed (:data:`ANCHORS`). Needs the shared data
folder (``SHARED/hcp_atlases``, ``SHARED/pyafq_subject``); a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tractvq import io
from tractvq.baselines import make_baseline
from tractvq.bench.rate_distortion import score_rate_distortion
from tractvq.cache import load_cache, prepare

REPOSITORY = Path(__file__).resolve().parents[1]
#: HCP-842 bundles that HCP-1065 lacks: bundle types the fitted codecs never saw.
HELD_OUT = ["AC", "AF_L", "CB_L", "CB_R", "CNIV_L", "CNIV_R", "CNX_L", "CNX_R", "CS_L", "CS_R", "CTT_L", "CTT_R", "CT_L", "CT_R", "C_L", "C_R", "DLF_L", "DLF_R", "EMC_R", "FAT_L", "FPT_L", "FPT_R", "ILF_L", "ILF_R", "LL_L", "LL_R", "MLF_L", "MLF_R", "ML_L", "ML_R", "OPT_L", "OPT_R", "PC", "PPT_L", "PPT_R", "SLF_L", "SLF_R", "STT_L", "STT_R", "TPT_L", "TPT_R", "UF_R"]
#: PCA-16 mean MDF (mm) measured on the same held-out sets when they were designed (tractvq's
#: default grouping, PCA fitted on HCP-1065 + the shared HCP-842 bundles).
ANCHORS = {"sample": 1.86, "pyafq": 2.13, "unseen-bundles": 0.88, "sparse-hcp842": 0.83}
SUBSETS, SUBSET_SIZE = 4, 500


def _read(path: Path):
    """A tractogram in RASMM, voxel-centre origin."""
    tractogram = io.load(path)
    tractogram.to_rasmm()
    tractogram.to_center()
    return tractogram


def _write(streamlines, space_attributes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return io.save(io.make_tractogram(streamlines, space_attributes), path)


def _subsample(path: Path, count: int, rng: np.random.Generator, output: Path) -> Path:
    """At most ``count`` streamlines of ``path`` (seeded), written to ``output``."""
    tractogram = _read(path)
    chosen = np.sort(rng.permutation(len(tractogram.streamlines))[:count])
    return _write(tractogram.streamlines[chosen], tractogram.space_attributes, output)


def _sparse_sets(paths: list[Path], rng: np.random.Generator, folder: Path) -> list[Path]:
    """:data:`SUBSETS` files of :data:`SUBSET_SIZE` streamlines drawn from all ``paths`` together."""
    tractograms = [_read(path) for path in paths]
    pool = [streamline for tractogram in tractograms for streamline in tractogram.streamlines]
    return [_write([pool[index] for index in rng.choice(len(pool), SUBSET_SIZE, replace=False)],
                   tractograms[0].space_attributes, folder / f"subset-{number}.trk")
            for number in range(SUBSETS)]


def _bundle(path: Path) -> str:
    return path.name.split("__", 1)[1].split(".")[0]


def build_sets(shared: Path, work: Path, *, per_bundle: int, seed: int) -> tuple[Path, dict[str, list[Path]]]:
    """The training cache of the PCA baselines and the held-out sources' files."""
    rng = np.random.default_rng(seed)
    atlases = shared / "hcp_atlases"
    hcp1065 = sorted((atlases / "sub-hcp1065" / "tractography").glob("*.trk"))
    hcp842 = sorted((atlases / "sub-hcp842" / "tractography").glob("*.trk"))
    if not hcp1065 or not hcp842:
        raise SystemExit(f"{atlases}: no HCP-1065 and HCP-842 bundles there (see --shared)")
    # the shipped models' training cache (README, "The shipped models"): both atlases, the
    # bundle types HCP-1065 lacks held out (its validation split)
    cache = prepare([atlases], work / "fit-cache", validation_fraction=0, holdout_bundles=HELD_OUT, seed=seed,
                    progress=False)
    sample_files = [record.path for record in io.find_tractograms(REPOSITORY / "data" / "sample")]
    sources = {
        "sample": [REPOSITORY / "data" / "sample"],
        "pyafq": sorted((shared / "pyafq_subject").glob("*.trx")),
        "unseen-bundles": [_subsample(path, per_bundle, rng, work / "unseen" / path.name)
                           for path in hcp842 if _bundle(path) in HELD_OUT],
        "sparse-hcp842": _sparse_sets(hcp842, rng, work / "sparse-hcp842"),
        "sparse-sample": _sparse_sets(sample_files, rng, work / "sparse-sample"),
    }
    return cache, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPOSITORY.parent / "shared" / "data",
                        help="The shared data folder (hcp_atlases/, pyafq_subject/).")
    parser.add_argument("-m", "--model", dest="models", action="append", help="Model (repeatable; default: default, discrete).")
    parser.add_argument("--baseline", dest="baselines", action="append",
                        help="Baseline codec (repeatable; default: pca-16, pca-16@36bits, dipy-compress-0.5, float16).")
    parser.add_argument("--per-bundle", type=int, default=256, help="Streamlines per unseen bundle type at most.")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    models = arguments.models or ["default", "discrete"]
    names = arguments.baselines or ["pca-16", "pca-16@36bits", "dipy-compress-0.5", "float16"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        cache, sources = build_sets(arguments.shared, Path(work), per_bundle=arguments.per_bundle, seed=arguments.seed)
        training = load_cache(cache).split("train")
        baselines = [make_baseline(name) for name in names]
        for baseline in baselines:
            if baseline.needs_fit:
                baseline.fit(training)
        print(f"PCA fitted on {int(training.mask.sum()):,} streamlines of {len(training.sources)} bundles"
              f" ({time.perf_counter() - start:.0f} s)")
        results = {name: score_rate_distortion(paths, models, baselines, seed=arguments.seed)
                   for name, paths in sources.items()}
    header = f"| {'Source':<15} | {'Codec':<18} | {'Bytes/streamline':>16} | {'MDF (mm)':>8} | {'max MDF (mm)':>12} | {'BUAN 5 mm':>9} |"
    print(header)
    print("|---|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        for row in rows:
            print(f"| {name:<15} | {row['label']:<18} | {row['bytes_per_streamline']:>16,.2f} | {row['mdf_mm']:>8.2f}"
                  f" | {row['mdf_max_mm']:>12.2f} | {row['buan_mm']:>9.3f} |")
    print("\nPCA-16 mean MDF (mm), here and as measured when the sets were designed:")
    for name, anchor in ANCHORS.items():
        measured = next((row["mdf_mm"] for row in results[name] if row["label"] == "pca-16"), float("nan"))
        print(f"  {name:<15} {measured:5.2f}   anchor {anchor:.2f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
