import os
import stat

import pytest

from tractvq.errors import OutputError
from tractvq.outputs import atomic_output, check_output


def test_check_output_refuses_an_existing_file_without_force(tmp_path):
    target = tmp_path / "out.trk"
    target.write_text("keep me")
    with pytest.raises(OutputError, match=r"out\.trk: already exists; pass force=True"):
        check_output(target)
    assert check_output(target, force=True) == target


def test_check_output_names_a_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.trk")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_names_an_unwritable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(OutputError, match="not writable"):
        check_output(folder / "out.trk")


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_atomic_output_names_a_folder_that_refuses_writes_even_to_root():
    with pytest.raises(OutputError, match=r"/sys/out\.trk: (cannot write in the output folder /sys|the output folder /sys is not writable)"):
        with atomic_output("/sys/out.trk"):
            pass


def test_atomic_output_leaves_nothing_when_writing_fails(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_old_file_when_a_forced_write_fails(tmp_path):
    target = tmp_path / "out.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, force=True) as temporary:
            temporary.write_text("new")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_output_replaces_a_folder_and_uses_default_permissions(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_output(target, force=True, directory=True) as folder:
        (folder / "fresh").write_text("y")
    assert sorted(path.name for path in target.iterdir()) == ["fresh"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
