"""Shared fixtures: the real data every test runs on."""

from __future__ import annotations

from pathlib import Path

import nibabel
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = PROJECT_ROOT / "data" / "sample"
SAMPLE_SUBJECT = SAMPLE_ROOT / "sub-vqdiff"
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The shipped sample subject's dataset root (TractoInferno layout)."""
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def sample_bundle() -> Path:
    """One real bundle of the sample subject (192 streamlines)."""
    return SAMPLE_SUBJECT / "tractography" / "sub-vqdiff__POPT_R.trk"


@pytest.fixture(scope="session")
def fornix() -> Path:
    """DIPY's fornix sample: 300 real streamlines that fail DIPY's bounding-box check."""
    from dipy.data import get_fnames

    return Path(get_fnames(name="fornix"))


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    """nibabel's streamline test files (.trk and .tck, good and broken)."""
    return NIBABEL_DATA
