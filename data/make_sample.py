"""Make the sample subject in TractoInferno layout from the published VQ-Diff arrays.

Usage (from the project root)::

    python data/make_sample.py ../shared/data/tractoinferno_subject data/sample --force

Each ``<BUNDLE>.npy`` of shape ``(N, 3, 64)`` becomes
``data/sample/sub-vqdiff/tractography/sub-vqdiff__<BUNDLE>.trk`` with coordinates
``tractvq.io.ARRAY_MM_PER_UNIT`` (100) millimetres per array unit, on the reference grid of
:func:`tractvq.io.array_reference`. Re-running it writes identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tractvq import io

SUBJECT = "sub-vqdiff"


def make_sample(arrays_folder: Path, output_root: Path, *, force: bool = False) -> list[Path]:
    """Write one ``.trk`` per ``.npy`` array of ``arrays_folder`` under ``output_root``.

    Parameters
    ----------
    arrays_folder : pathlib.Path
        Folder of ``<BUNDLE>.npy`` arrays.
    output_root : pathlib.Path
        Dataset root to write ``sub-vqdiff/tractography/`` into.
    force : bool, optional
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    folder = output_root / SUBJECT / "tractography"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for array_path in sorted(arrays_folder.glob("*.npy")):
        tractogram = io.load_array(array_path)
        written.append(io.save(tractogram, folder / f"{SUBJECT}__{array_path.stem}.trk", force=force))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arrays_folder", type=Path)
    parser.add_argument("output_root", type=Path)
    parser.add_argument("--force", action="store_true", help="replace existing files")
    arguments = parser.parse_args()
    for path in make_sample(arguments.arrays_folder, arguments.output_root, force=arguments.force):
        print(path)


if __name__ == "__main__":
    main()
