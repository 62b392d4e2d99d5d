import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tractvq import __version__

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(PROJECT_ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(output)],
        check=True,
        capture_output=True,
    )
    (built,) = output.glob("tractvq-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_installs_only_the_tractvq_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"tractvq", f"tractvq-{__version__}.dist-info"}
    assert "tractvq/cli/main.py" in names and "tractvq/cli/info.py" in names
    assert not any(name.startswith("cli/") for name in names)


@pytest.mark.slow
def test_the_wheel_declares_the_console_script(wheel):
    archive = zipfile.ZipFile(wheel)
    entry_points = archive.read(f"tractvq-{__version__}.dist-info/entry_points.txt").decode()
    assert "tractvq = tractvq.cli.main:main" in entry_points
    top_level = [name for name in archive.namelist() if name.endswith("top_level.txt")]
    if top_level:
        assert archive.read(top_level[0]).decode().split() == ["tractvq"]


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    library = {f"tractvq/{path.relative_to(PROJECT_ROOT / 'tractvq')}" for path in (PROJECT_ROOT / "tractvq").rglob("*.py")}
    commands = {f"tractvq/cli/{path.name}" for path in (PROJECT_ROOT / "cli").glob("*.py")}
    assert library | commands <= names
