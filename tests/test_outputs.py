import errno
import os
import re
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
    with pytest.raises(OutputError, match=r"/sys/out\.trk: (cannot be written \(.+\)|the output folder /sys is not writable)$"):
        with atomic_output("/sys/out.trk"):
            pass


def test_atomic_output_leaves_nothing_when_writing_fails(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_old_file_when_a_forced_write_fails(tmp_path):
    target = tmp_path / "out.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target, force=True) as temporary:
        temporary.write_text("new")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_output_replaces_a_folder_and_uses_default_permissions(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_output(target, force=True, directory=True, owned=("stale",)) as folder:
        (folder / "fresh").write_text("y")
    assert sorted(path.name for path in target.iterdir()) == ["fresh"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


def test_a_file_created_while_writing_is_not_replaced_without_force(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(OutputError, match=r"out\.npz: already exists; pass force=True"):
        with atomic_output(target) as temporary:
            temporary.write_text("new")
            target.write_text("made meanwhile by someone else")
    assert target.read_text() == "made meanwhile by someone else"
    assert list(tmp_path.iterdir()) == [target]


def test_without_hard_links_a_name_is_still_taken_exclusively(tmp_path, monkeypatch):
    def no_hard_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    with atomic_output(tmp_path / "first.txt") as temporary:
        temporary.write_text("first")
    assert (tmp_path / "first.txt").read_text() == "first"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(tmp_path / "second.txt") as temporary:
            temporary.write_text("new")
            (tmp_path / "second.txt").write_text("made meanwhile")
    assert (tmp_path / "second.txt").read_text() == "made meanwhile"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.txt", "second.txt"]


@pytest.mark.parametrize(
    ("existing", "directory", "problem"),
    [
        ("fifo", False, "is not a regular file (a device, a pipe or a socket); refusing to replace it"),
        ("folder", False, "is a folder; refusing to replace it with a file"),
        ("file", True, "is not a folder; refusing to replace it with one"),
    ],
)
def test_force_replaces_only_what_is_of_the_kind_written(tmp_path, existing, directory, problem):
    target = tmp_path / "out"
    {"fifo": os.mkfifo, "folder": os.mkdir, "file": lambda path: open(path, "w").close()}[existing](target)
    with pytest.raises(OutputError, match=f"^{re.escape(f'{target}: {problem}')}$"):
        with atomic_output(target, force=True, directory=directory):
            pass
    assert sorted(tmp_path.iterdir()) == [target]
    assert stat.S_IFMT(target.lstat().st_mode) == {"fifo": stat.S_IFIFO, "folder": stat.S_IFDIR, "file": stat.S_IFREG}[existing]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_os_errors_of_the_writer_name_the_output_on_one_line(tmp_path, code):
    target = tmp_path / "out.npz"
    with pytest.raises(OutputError) as raised, atomic_output(target):
        raise OSError(code, os.strerror(code))
    assert str(raised.value) == f"{target}: cannot be written ({os.strerror(code)})"
    assert list(tmp_path.iterdir()) == []


def test_a_forced_folder_keeps_the_old_one_when_publishing_fails(tmp_path, monkeypatch):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "old").write_text("x")
    rename, calls = os.rename, []

    def second_rename_fails(*args):
        calls.append(args)
        if len(calls) == 2:  # the first moves the old folder aside, the second publishes the new one
            raise OSError(errno.EIO, "Input/output error")
        rename(*args)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OutputError, match=r"cache: cannot be written \(Input/output error\)"):
        with atomic_output(target, force=True, directory=True) as folder:
            (folder / "old").write_text("y")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache"]
    assert (target / "old").read_text() == "x"


def test_check_output_names_impossible_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file/out\.npz: .*/file is not a folder$"):
        check_output(tmp_path / "file" / "out.npz")
    with pytest.raises(OutputError, match=r"file/deeper/out\.npz: cannot be written \(Not a directory\)$"):
        check_output(tmp_path / "file" / "deeper" / "out.npz")
    with pytest.raises(OutputError, match=r"x{300}\.npz: cannot be written \(File name too long\)$"):
        check_output(tmp_path / ("x" * 300 + ".npz"))
    with pytest.raises(OutputError, match=r"out\.trk: the file name must end in \.npz$"):
        check_output(tmp_path / "out.trk", suffix=".npz")


def test_force_never_replaces_a_folder_holding_files_the_output_does_not_write(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("the user's")
    (output / "result.txt").write_text("old")
    with pytest.raises(OutputError, match="holds 'notes.txt', which this command does not write"):
        with atomic_output(output, force=True, directory=True) as folder:
            (folder / "result.txt").write_text("new")
    assert (output / "notes.txt").read_text() == "the user's" and (output / "result.txt").read_text() == "old"
    with atomic_output(output, force=True, directory=True, owned=("notes.txt",)) as folder:
        (folder / "result.txt").write_text("new")  # a name this kind of output may write: replaced
    assert sorted(path.name for path in output.iterdir()) == ["result.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # nothing left aside
