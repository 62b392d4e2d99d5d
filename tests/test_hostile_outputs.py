"""Hostile outputs (issue 13, classes 1, 2, 3 and 9): names read from files are never paths,
outputs are never half-written or silently replaced, OS errors are one line.

Every CLI failure here must exit with status 2, show exactly one error line naming the file
(after any finished progress bar), leave no new file anywhere and every existing file as it
was.
"""

import errno
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from tractvq import encode, io
from tractvq.cli.main import cli
from tractvq.codes import Codes
from tractvq.encoding import decode, write_tractograms
from tractvq.errors import OutputError

#: A progress bar that ran to its end (it stays on screen above the error).
_FINISHED_BAR = re.compile(r"^\w+: 100%\|")


@pytest.fixture(scope="module")
def codes_files(tmp_path_factory, sample_bundle):
    """Real codes files of the default model: one bundle, and two bundles of subject sub-01."""
    folder = tmp_path_factory.mktemp("codes")
    inputs = []
    for bundle in ("AF_L", "CC_Fr_1"):
        inputs.append(folder / f"sub-01__{bundle}.trk")
        shutil.copyfile(sample_bundle, inputs[-1])
    return {
        "one": encode(inputs[:1]).save(folder / "one.npz"),
        "two": encode(inputs).save(folder / "two.npz"),
    }


def tamper(codes, target, names):
    """Copy a codes file with other (subject, bundle) names, as anyone can with NumPy."""
    with np.load(codes, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    grouping = json.loads(str(arrays["grouping"]))
    for entry, (subject, name) in zip(grouping["sources"], names, strict=True):
        entry["subject"], entry["name"] = subject, name
    arrays["grouping"] = np.array(json.dumps(grouping))
    np.savez(target, **arrays)
    return target


def snapshot(root):
    """Every path under ``root`` with its kind and, for files, its bytes."""
    state = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            state[path.relative_to(root)] = path.read_bytes()
        else:
            state[path.relative_to(root)] = stat.S_IFMT(mode)
    return state


def shown(stderr):
    """The lines of ``stderr`` as a terminal shows them (a carriage return rewrites the line)."""
    lines = stderr.split("\n")
    assert lines[-1] == "", repr(stderr)
    return [line.rsplit("\r", 1)[-1] for line in lines[:-1]]


def invoke(arguments):
    return CliRunner().invoke(cli, [str(argument) for argument in arguments])


def assert_one_line_error(result, *parts):
    """Exit status 2 and one error line containing ``parts`` after any finished progress bar."""
    assert result.exit_code == 2, (result.output, result.stderr, result.exception)
    *bars, error = shown(result.stderr)
    assert all(_FINISHED_BAR.match(line) for line in bars), result.stderr
    assert error.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    assert ".tmp" not in error, error  # names the output, not a temporary file
    for part in parts:
        assert part in error, error


def patch_to_fail(monkeypatch, target, error, after=0):
    """Make the function ``target`` ("module.name") raise ``error`` (an errno: that OSError)
    from its call number ``after + 1`` on; the calls before work."""
    module, name = target.rsplit(".", 1)
    owner = __import__(module, fromlist=[name])
    function, calls = getattr(owner, name), []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) > after:
            raise OSError(error, os.strerror(error)) if isinstance(error, int) else error
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


# ---------------------------------------------------------------- 1. names are data, not paths
@pytest.mark.parametrize(
    ("subject", "bundle", "expected"),
    [
        ("../../x", "AF_L", "_.._x/tractography/_.._x__AF_L.trk"),
        ("sub-01", "../../../../victim", "sub-01/tractography/sub-01___.._.._.._victim.trk"),
        ("sub-01", "/../../../../victim", "sub-01/tractography/sub-01___.._.._.._.._victim.trk"),
        ("{tmp}/abs", "AF_L", None),
        ("sub-01", "a\\b\x00c", "sub-01/tractography/sub-01__a_b_c.trk"),
        ("..", ".", "sub-unknown/tractography/sub-unknown__bundle.trk"),
        ("", "", "sub-unknown/tractography/sub-unknown__bundle.trk"),
        ("-rf", ".hidden", "rf/tractography/rf__hidden.trk"),
        ("sub-01\nError: fake", "AF_L", "sub-01_Error__fake/tractography/sub-01_Error__fake__AF_L.trk"),
        ("sub-01", "x" * 300, f"sub-01/tractography/sub-01__{'x' * 100}.trk"),
    ],
)
def test_decode_turns_names_from_the_codes_file_into_safe_names_inside_the_folder(
    tmp_path, codes_files, subject, bundle, expected
):
    subject = subject.format(tmp=tmp_path)
    codes = tamper(codes_files["one"], tmp_path / "codes.npz", [(subject, bundle)])
    (tmp_path / "victim.trk").write_bytes(b"unrelated")
    before = snapshot(tmp_path)
    result = invoke(["decode", codes, "-o", tmp_path / "out", "--force"])
    assert result.exit_code == 0, (result.output, result.stderr)
    after = snapshot(tmp_path)
    assert {path: after[path] for path in before} == before
    new = [path for path in after if path not in before and after[path] != stat.S_IFDIR]
    assert len(new) == 1 and new[0].parts[0] == "out", new
    if expected is not None:
        assert new[0].relative_to("out").as_posix() == expected
    assert not any(part.startswith((".", "-")) for part in new[0].parts)


@pytest.mark.parametrize(
    "names",
    [
        [("sub-01", "AF L"), ("sub-01", "AF_L")],
        [("sub/01", "AF_L"), ("sub_01", "AF_L")],
        [("sub-01", "x" * 100 + "a"), ("sub-01", "x" * 100 + "b")],
    ],
)
def test_names_that_become_the_same_file_are_refused(tmp_path, codes_files, names):
    codes = tamper(codes_files["two"], tmp_path / "codes.npz", names)
    before = snapshot(tmp_path)
    result = invoke(["decode", codes, "-o", tmp_path / "out"])
    assert_one_line_error(result, f"{tmp_path / 'out'}: bundles ", "would both be written to")
    assert snapshot(tmp_path) == before


def test_a_symbolic_link_in_the_output_folder_leading_outside_is_refused(tmp_path, codes_files):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub-01").symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    result = invoke(["decode", codes_files["two"], "-o", tmp_path / "out", "--force"])
    assert_one_line_error(result, "leads outside the output folder")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 2. output names
@pytest.mark.parametrize("name", ["codes_noext", "codes.trk", "codes.npz.part"])
@pytest.mark.parametrize("force", [False, True])
def test_encode_refuses_a_codes_file_not_named_npz(tmp_path, sample_bundle, name, force):
    (tmp_path / "codes.trk").write_bytes(b"a good tractogram")
    before = snapshot(tmp_path)
    result = invoke(["encode", sample_bundle, "-o", tmp_path / name, *(["--force"] if force else [])])
    assert_one_line_error(result, f"{tmp_path / name}: the file name must end in .npz")
    assert snapshot(tmp_path) == before


def test_codes_save_writes_exactly_the_file_named_or_refuses(tmp_path, codes_files):
    codes = Codes.load(codes_files["one"])
    with pytest.raises(OutputError, match=r"x: the file name must end in \.npz$"):
        codes.save(tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    assert codes.save(tmp_path / "x.npz") == tmp_path / "x.npz"
    assert list(tmp_path.iterdir()) == [tmp_path / "x.npz"]
    np.testing.assert_array_equal(Codes.load(tmp_path / "x.npz").latents, codes.latents)
    (tmp_path / "x.npz").write_bytes(b"keep")
    codes.save(tmp_path / "x.npz", force=True)  # a forced save replaces the file, never with 0 bytes
    assert os.path.getsize(tmp_path / "x.npz") == os.path.getsize(codes_files["one"])


# ---------------------------------------------------------------- 3. disk full, read-only, impossible paths
@pytest.mark.parametrize(
    ("target", "patch", "message"),
    [
        ("codes.npz", ("numpy.savez", errno.ENOSPC), "codes.npz: cannot be written (No space left on device)"),
        ("codes.npz", ("os.link", errno.EROFS), "codes.npz: cannot be written (Read-only file system)"),
        ("codes.npz", ("tempfile.mkstemp", errno.EACCES), "codes.npz: cannot be written (Permission denied)"),
        ("existing.npz", ("os.replace", errno.EIO), "existing.npz: cannot be written (Input/output error)"),
        ("file.txt/codes.npz", None, "file.txt/codes.npz: {tmp}/file.txt is not a folder"),
        ("file.txt/deeper/codes.npz", None, "file.txt/deeper/codes.npz: cannot be written (Not a directory)"),
        ("x" * 300 + ".npz", None, ".npz: cannot be written (File name too long)"),
    ],
)
def test_encode_turns_os_errors_into_one_line(tmp_path, monkeypatch, sample_bundle, target, patch, message):
    (tmp_path / "file.txt").write_bytes(b"a file")
    (tmp_path / "existing.npz").write_bytes(b"the codes of yesterday")
    before = snapshot(tmp_path)
    if patch is not None:
        patch_to_fail(monkeypatch, *patch)
    force = ["--force"] if target == "existing.npz" else []  # published by os.replace, else by os.link
    result = invoke(["encode", sample_bundle, "-o", tmp_path / target, *force])
    assert_one_line_error(result, message.format(tmp=tmp_path))
    assert snapshot(tmp_path) == before


_SECOND = "sub-01/tractography/sub-01__CC_Fr_1.trk"  # the second bundle written


@pytest.mark.parametrize(
    ("output", "patch", "message"),
    [
        ("out", ("tractvq.io.save_tractogram", errno.ENOSPC, 1),
         f"out/{_SECOND}: cannot be written (No space left on device)"),
        ("out", ("os.rename", errno.EROFS, 0), "out: cannot be written (Read-only file system)"),
        # os.link publishes each file in the temporary folder (calls 1, 2), then moves it in (3, 4)
        ("existing", ("os.link", errno.ENOSPC, 1), f"existing/{_SECOND}: cannot be written (No space left on device)"),
        ("existing", ("os.link", errno.EROFS, 2), "existing: cannot be written (Read-only file system)"),
        ("existing", ("os.link", errno.EROFS, 3), "existing: cannot be written (Read-only file system)"),
        ("new/deeper", ("tractvq.io.save_tractogram", errno.EDQUOT, 1),
         f"new/deeper/{_SECOND}: cannot be written (Disk quota exceeded)"),
        ("file.txt/out", None, "file.txt/out: cannot be written (Not a directory)"),
        ("plain", None, "plain: is not a folder"),
        ("x" * 300, None, "cannot be written (File name too long)"),
    ],
)
def test_decode_to_a_folder_writes_every_bundle_or_none(tmp_path, monkeypatch, codes_files, output, patch, message):
    (tmp_path / "file.txt").write_bytes(b"a file")
    (tmp_path / "plain").write_bytes(b"a file without extension")
    existing = tmp_path / "existing" / "sub-01" / "tractography"
    existing.mkdir(parents=True)
    (existing / "sub-01__AF_L.trk").write_bytes(b"an older decode")
    (existing / "notes.txt").write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    if patch is not None:
        patch_to_fail(monkeypatch, *patch)
    result = invoke(["decode", codes_files["two"], "-o", tmp_path / output, "--force"])
    assert_one_line_error(result, message)
    assert snapshot(tmp_path) == before


def test_decode_to_one_file_on_a_full_disk(tmp_path, monkeypatch, codes_files):
    (tmp_path / "out.trk").write_bytes(b"an older decode")
    before = snapshot(tmp_path)
    patch_to_fail(monkeypatch, "tractvq.io.save_tractogram", errno.ENOSPC)
    result = invoke(["decode", codes_files["one"], "-o", tmp_path / "out.trk", "--force"])
    assert_one_line_error(result, "out.trk: cannot be written (No space left on device)")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("existing", "interrupted", "after"),
    [
        (False, "tractvq.io.save_tractogram", 1),  # while writing the second bundle
        (True, "tractvq.io.save_tractogram", 1),
        (False, "os.rename", 0),  # while publishing the new folder
        (True, "os.link", 2),  # while moving the first bundle into the existing folder
        (True, "os.link", 3),  # while moving the second one (replacing a file)
    ],
)
def test_ctrl_c_while_decoding_to_a_folder_leaves_nothing(tmp_path, monkeypatch, codes_files, existing, interrupted, after):
    codes = Codes.load(codes_files["two"])
    tractograms = decode(codes)
    folder = tmp_path / "out" / "sub-01" / "tractography"
    if existing:
        folder.mkdir(parents=True)
        (folder / "sub-01__CC_Fr_1.trk").write_bytes(b"older")
        (folder / "notes.txt").write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    patch_to_fail(monkeypatch, interrupted, KeyboardInterrupt(), after)
    with pytest.raises(KeyboardInterrupt):
        write_tractograms(tractograms, codes.layout.sources, tmp_path / "out", force=True)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()  # run again, to the end: the bundles join the user's files
    write_tractograms(tractograms, codes.layout.sources, tmp_path / "out", force=True)
    assert sorted(path.name for path in tmp_path.rglob("*")) == sorted(
        ["out", "sub-01", "tractography", "sub-01__AF_L.trk", "sub-01__CC_Fr_1.trk", *(["notes.txt"] if existing else [])]
    )
    assert len(io.load(folder / "sub-01__CC_Fr_1.trk").streamlines) == 192


# ---------------------------------------------------------------- 9. --force replaces only what tractvq wrote
@pytest.mark.parametrize("link", [False, True])
def test_encode_force_replaces_only_a_regular_file(tmp_path, sample_bundle, link):
    target = tmp_path / "codes.npz"
    os.mkfifo(tmp_path / "pipe")
    if link:
        target.symlink_to(tmp_path / "pipe")
    else:
        (tmp_path / "pipe").rename(target)
    before = snapshot(tmp_path)
    result = invoke(["encode", sample_bundle, "-o", target, "--force"])
    assert_one_line_error(result, f"{target}: is not a regular file (a device, a pipe or a socket); refusing to replace it")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "content",
    [
        {"notes.txt": b"my notes"},
        {"manifest.json": b'{"format": "tractvq-cache"}', "thesis.tex": b"years of work"},
        {"manifest.json": b'{"format": "something else"}'},
    ],
)
def test_prepare_force_replaces_only_a_cache_or_an_empty_folder(tmp_path, sample_bundle, content):
    cache = tmp_path / "cache"
    cache.mkdir()
    for run in range(2):  # into the empty folder, then onto the cache written
        assert invoke(["prepare", sample_bundle, "-o", cache, "--force"]).exit_code == 0
        assert sorted(path.name for path in tmp_path.rglob("*")) == ["cache", "groups.npz", "labels.npz", "manifest.json"]
    for name, data in content.items():
        (cache / name).write_bytes(data)
    before = snapshot(tmp_path)
    result = invoke(["prepare", sample_bundle, "-o", cache, "--force"])
    assert_one_line_error(result, f"{cache}: is not a tractvq cache")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["encode", "prepare"])
def test_an_error_under_a_running_progress_bar_is_the_only_line_shown(tmp_path, sample_bundle, command):
    bad = tmp_path / "sub-01__bad.trk"
    bad.write_bytes(b"not a tractogram")
    output = tmp_path / ("codes.npz" if command == "encode" else "cache")
    result = invoke([command, sample_bundle, bad, "-o", output])
    assert result.exit_code == 2
    (line,) = shown(result.stderr)
    assert line.startswith(f"Error: {bad}: cannot read this .trk file"), result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [bad.name]
