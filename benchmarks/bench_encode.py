"""Time ``tractvq encode`` as a whole process against DIPY's load + resample, and compare
their peak memory, on whole-brain-sized tractograms.

Usage::

    python benchmarks/bench_encode.py [--model default] [--streamlines 367630] [--large] [--repeats 3]
                                      [--files FOLDER]

Makes a whole-brain ``.trk`` as issue 15 measured it: the synthetic whole-brain tractogram of
``bench_spine.py`` (36,763 smooth curves of 20-200 mm, 40-400 points each) repeated with
small random shifts (up to 1 mm) to ``--streamlines`` (367,630: ten copies; ``--large``
adds a file of 3,676,300, about 9.3 GiB on disk, for which DIPY's load takes about 19 GiB of
memory). Then, ``--repeats`` pairs, interleaved, each
in a fresh process measured from a fresh parent (wall time; peak resident memory from
``getrusage(RUSAGE_CHILDREN)``): DIPY's ``load_tractogram`` + ``set_number_of_points`` to 64
points, and ``tractvq encode FILE -o codes.npz`` (imports, model, load, resample, group,
normalise, encode, write). Prints the medians and the ratios. Goals: time <= 2.0, peak
memory <= 1.5. ``--files FOLDER`` keeps the tractograms there and reuses them (building the
large one takes minutes); by default they go to a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from bench_spine import make_whole_brain

#: Streamlines of the tractogram that is repeated (the real one of issue 15 had this many).
BASE_STREAMLINES = 36_763
LARGE_STREAMLINES = 3_676_300

DIPY = (
    "from dipy.io.streamline import load_tractogram\n"
    "from dipy.tracking.streamline import set_number_of_points\n"
    "import sys\n"
    "set_number_of_points(load_tractogram(sys.argv[1], 'same', bbox_valid_check=False).streamlines, nb_points=64)\n"
)
#: Runs its arguments as a command and prints its wall time and peak memory (MiB).
MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
)


def make_repeated(path: Path, count: int, rng: np.random.Generator) -> None:
    """Write ``count`` streamlines: the base tractogram, then shifted copies of it."""
    base_path = path.with_name("base.trk")
    make_whole_brain(base_path, min(count, BASE_STREAMLINES), rng)
    base = nib.streamlines.load(str(base_path))
    streamlines = base.streamlines
    shifts = rng.uniform(-1, 1, (-(-count // len(streamlines)), 3)).astype(np.float32)
    shifts[0] = 0

    def repeated():
        for index in range(count):
            copy, row = divmod(index, len(streamlines))
            yield streamlines[row] + shifts[copy]

    tractogram = nib.streamlines.LazyTractogram(repeated, affine_to_rasmm=np.eye(4))
    nib.streamlines.save(tractogram, str(path), header=base.header)
    base_path.unlink()


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of ``command``, run from a fresh parent."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    seconds, mebibytes = result.stdout.split()
    return float(seconds), float(mebibytes)


def _console_script() -> str:
    """The installed ``tractvq`` command, the one beside this Python first (``python -m``
    would put the working directory, maybe a checkout's ``tractvq/``, before the package)."""
    found = shutil.which("tractvq", path=str(Path(sys.executable).parent)) or shutil.which("tractvq")
    if found is None:
        sys.exit("no tractvq command found: install tractvq (pip install -e .)")
    return found


def compare(path: Path, model: str, repeats: int) -> None:
    """Print the medians of ``repeats`` interleaved pairs and their ratios."""
    codes = path.with_name("codes.npz")
    commands = {
        "DIPY load + resample": [sys.executable, "-c", DIPY, str(path)],
        "tractvq encode": [_console_script(), "encode", str(path), "-m", model, "-o", str(codes), "--force"],
    }
    runs = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(measure(command))
    medians = {name: [statistics.median(values) for values in zip(*spent)] for name, spent in runs.items()}
    for name, (seconds, mebibytes) in medians.items():
        print(f"  {name:22s} {seconds:7.2f} s {mebibytes:8.0f} MiB peak")
    (dipy_seconds, dipy_peak), (ours_seconds, ours_peak) = medians.values()
    print(f"  ratios: time {ours_seconds / dipy_seconds:.2f} (goal <= 2.0), peak memory {ours_peak / dipy_peak:.2f} (goal <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file or shipped name")
    parser.add_argument("--streamlines", type=int, default=10 * BASE_STREAMLINES)
    parser.add_argument("--large", action="store_true", help=f"also {LARGE_STREAMLINES:,} streamlines")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (medians are printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=Path, help="folder that keeps the tractograms for later runs")
    arguments = parser.parse_args()
    sizes = [arguments.streamlines] + ([LARGE_STREAMLINES] if arguments.large else [])
    for count in sizes:
        with contextlib.ExitStack() as stack:
            folder = arguments.files or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"whole_brain_{count}_seed{arguments.seed}.trk"
            if not path.exists():
                building = path.with_suffix(".part.trk")
                make_repeated(building, count, np.random.default_rng([arguments.seed, count]))
                building.rename(path)
            print(f"{count:,} streamlines ({path.stat().st_size / 2**20:.0f} MiB), median of {arguments.repeats}:")
            compare(path, arguments.model, arguments.repeats)


if __name__ == "__main__":
    main()
