"""The documentation: the Sphinx site builds without warnings, and every command in it runs.

Every command in the docs is run by a test, so the docs cannot rot. The convention:

Which blocks run
    Every fenced code block of ``README.md`` and ``docs/*.md`` whose language is ``bash``,
    ``sh``, ``shell``, ``console`` or ``python``. Other blocks (no language, ``text``, ``toml``,
    MyST directives such as ```` ```{toctree} ````) are not run.

    - ``bash``/``sh``/``shell``: the block is one bash script, run with ``set -eo pipefail``
      (comments, ``\\`` continuations, ``&&``, ``$(which tractvq)`` all work).
    - ``console``: the lines that start with ``$ `` are commands (a line ending in ``\\``
      continues on the next); every other line is sample output and is not checked.
    - ``python``: the block is one script, run with this Python.

    A block passes when it exits with status 0 within ``BLOCK_TIMEOUT`` seconds.

Where they run
    Page by page, top to bottom, like a reader who follows the page: the blocks of one page
    share one working directory, a fresh temporary folder laid out like the repository
    (copies of ``data/``, ``docs/``, ``benchmarks/``, ``README.md``, ``pyproject.toml`` and
    ``tractvq/weights/``), so a later block can use what an earlier one wrote. The installed
    ``tractvq`` is the one under test. To save the 1.5-3 s of imports per command, the
    ``tractvq`` on the blocks' ``PATH`` runs each command in a fresh fork of one Python that
    has imported torch, DIPY and tractvq already (see "The warm tractvq" below); ``torchrun``
    workers, and every command when ``TRACTVQ_DOCS_TEST_SUBPROCESS=1`` is set, run the
    installed console script itself. The folder also holds stand-ins for files a reader
    brings along:

    - ``bundle.trk``: a real bundle of the sample subject (POPT_R, 192 streamlines);
    - ``bundle.tck`` and ``t1.nii.gz``: the same bundle as ``.tck``, and a NIfTI image of
      its space (the reference a ``.tck`` needs);
    - ``ae.pt``, ``vq.pt``, ``vq-ema.pt``, ``vqdiff.pt``: state-dicts with exactly the key
      names and shapes of the checkpoints published with VQ-Diff (random weights: the real
      ones are not redistributed here), for ``tractvq import-checkpoint``.

    ``pip`` is a shell function that does nothing: the environment is the one the README's
    install command made (CI runs that command itself before the tests).

Markers
    HTML comments on the lines directly above a block's opening fence (invisible on GitHub
    and on the site; several may be stacked, one per line):

    ``<!-- docs-test: replace "OLD" "NEW" -->``
        Replace OLD by NEW in the block before running it: shrink budgets that CI cannot
        afford (``"--steps 2500" "--steps 2"``), or point at a stand-in
        (``"~/TractoInferno" "data/sample"``). OLD must occur in the block.
    ``<!-- docs-test: fresh -->``
        Run this block (and the rest of the page) in a new working directory: for a block
        that repeats outputs an earlier block of the page already wrote.
    ``<!-- docs-test: skip "REASON" -->``
        Do not run the block. Only for what CI cannot have (CUDA GPUs, several machines,
        network downloads) or what another test already runs (the test suite itself, the
        site build). REASON is required and says which.
    ``<!-- ci:test -->``
        The README's test command: it is this test suite, so it is not run here
        (``.ci/run`` runs it).

    An unknown ``docs-test`` marker, a ``replace`` whose OLD is not in its block, a ``skip``
    without a reason or a marker above a block that does not run is an error
    (:func:`test_markers_are_valid`), so markers cannot rot either.

The site build and the commands are ``slow`` (about 20 s for the site, one to two minutes
for all pages on two cores): ``python -m pytest -m "not slow"`` leaves them out, and
``python -m pytest tests/test_docs.py -k tutorial.md`` runs the commands of one page.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

RUN_LANGUAGES = {"bash", "sh", "shell", "console", "python"}
SHELL_LANGUAGES = {"bash", "sh", "shell"}
BLOCK_TIMEOUT = 300  # seconds per block
WORKING_COPY = ["data", "docs", "benchmarks", "README.md", "pyproject.toml", "tractvq/weights"]
MARKERS = {"skip", "replace", "fresh"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
_MARKER = re.compile(r"^\s*docs-test:\s*(?P<kind>[\w-]+)(?P<arguments>.*)$", re.DOTALL)


@dataclass
class Block:
    """One fenced code block of a page, with the markers directly above it."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    comments: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES

    def markers(self) -> list[tuple[str, list[str]]]:
        """``(kind, arguments)`` of each ``docs-test`` marker, in order."""
        found = []
        for comment in self.comments:
            match = _MARKER.match(comment)
            if match:
                found.append((match["kind"], shlex.split(match["arguments"])))
        return found

    def skip_reason(self) -> str | None:
        if any(comment.strip() == "ci:test" for comment in self.comments):
            return "the test suite itself (.ci/run runs it)"
        for kind, arguments in self.markers():
            if kind == "skip":
                return " ".join(arguments)
        return None

    def fresh(self) -> bool:
        return any(kind == "fresh" for kind, _ in self.markers())

    def script(self) -> str:
        """The block's text with its replacements applied, as the script that is run."""
        text = self.text
        for kind, arguments in self.markers():
            if kind == "replace":
                old, new = arguments
                text = text.replace(old, new)
        if self.language == "console":
            return "\n".join(console_commands(text))
        return text


def read_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced code block of a Markdown file, with the HTML comments directly above it."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence = match["fence"]
        info = match["info"].strip()
        language = info.split()[0].lower() if info else ""
        comments = []
        above = index - 1
        while above >= 0 and _COMMENT.match(lines[above]):
            comments.insert(0, _COMMENT.match(lines[above])["body"].strip())
            above -= 1
        body = []
        index += 1
        closing = re.compile(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$")
        while index < len(lines) and not closing.match(lines[index]):
            body.append(lines[index])
            index += 1
        blocks.append(Block(path, above + 2 + len(comments), language, "\n".join(body) + "\n", comments))
        index += 1
    return blocks


def console_commands(text: str) -> list[str]:
    """The commands of a ``console`` block: ``$ `` lines and their ``\\`` continuations."""
    commands: list[str] = []
    continued = False
    for line in text.splitlines():
        if continued:
            commands[-1] += "\n" + line
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return commands


def marker_problems(block: Block) -> list[str]:
    """What is wrong with a block's markers (empty when nothing is)."""
    problems = []
    for comment in block.comments:
        if comment.startswith("docs-test") and not _MARKER.match(comment):
            problems.append(f"unreadable marker <!-- {comment} -->")
    try:
        markers = block.markers()
    except ValueError as error:  # shlex: unbalanced quotes
        return [f"unreadable marker arguments ({error})"]
    for kind, arguments in markers:
        if kind not in MARKERS:
            problems.append(f"unknown marker {kind!r} (known: {', '.join(sorted(MARKERS))})")
        elif kind == "skip" and not " ".join(arguments).strip():
            problems.append('skip needs a reason: <!-- docs-test: skip "REASON" -->')
        elif kind == "replace" and len(arguments) != 2:
            problems.append(f'replace takes "OLD" "NEW", got {arguments}')
        elif kind == "replace" and arguments[0] not in block.text:
            problems.append(f"replace: {arguments[0]!r} is not in the block")
        elif kind == "fresh" and arguments:
            problems.append(f"fresh takes no arguments, got {arguments}")
        if not block.runs:
            problems.append(f"marker {kind!r} above a block that does not run ({block.language or 'no language'})")
    return problems


# ---------------------------------------------------------------------------------------------
# The working copy


def _make_stand_ins(folder: Path) -> None:
    """The files a reader brings along (see the module docstring)."""
    import nibabel
    import numpy as np
    import torch

    from tractvq.io import load, read_space_attributes, save
    from tractvq.models import PUBLISHED_KINDS, published_layout

    bundle = ROOT / "data" / "sample" / "sub-vqdiff" / "tractography" / "sub-vqdiff__POPT_R.trk"
    shutil.copyfile(bundle, folder / "bundle.trk")
    save(load(bundle), folder / "bundle.tck")
    affine, dimensions, _, _ = read_space_attributes(bundle)
    nibabel.Nifti1Image(np.zeros(tuple(int(d) for d in dimensions), np.uint8), affine).to_filename(folder / "t1.nii.gz")

    generator = torch.Generator().manual_seed(0)
    for kind in PUBLISHED_KINDS:
        state = {
            key: 0.05 * torch.randn(shape, generator=generator)
            for key, shape in published_layout(kind).items()
        }
        if "_vq_vae._ema_cluster_size" in state:
            state["_vq_vae._ema_cluster_size"] = torch.ones_like(state["_vq_vae._ema_cluster_size"])
        torch.save(state, folder / f"{kind}.pt")


@pytest.fixture(scope="session")
def working_copy_template(tmp_path_factory) -> Path:
    template = tmp_path_factory.mktemp("docs-template")
    for name in WORKING_COPY:
        source, target = ROOT / name, template / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "_build", "*.py[co]"))
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    _make_stand_ins(template)
    return template


def _environment(bin_folder: Path | None = None) -> dict[str, str]:
    environment = dict(os.environ)
    folders = [str(bin_folder)] if bin_folder else []
    folders += [str(Path(sys.executable).parent), environment.get("PATH", "")]
    environment["PATH"] = os.pathsep.join(folders)
    environment.update(MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    return environment


_SHELL_PRELUDE = """set -eo pipefail
pip() { echo "docs-test: not running: pip $*  (the environment is already installed)"; }
"""


def run_block(block: Block, folder: Path, scripts: Path, bin_folder: Path | None) -> subprocess.CompletedProcess:
    """Run one block in ``folder``; python blocks are written to ``scripts`` (outside it)."""
    script = block.script()
    if block.language == "python":
        file = scripts / f"{block.path.stem}_{block.line}.py"
        file.write_text(script, encoding="utf-8")
        command = [sys.executable, str(file)]
    else:
        command = ["bash", "-c", _SHELL_PRELUDE + script]
    return subprocess.run(
        command, cwd=folder, env=_environment(bin_folder), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT, check=False,
    )


# ---------------------------------------------------------------------------------------------
# The warm tractvq: a fork server
#
# Importing torch, DIPY and tractvq takes 1.5-3 s, most of a short command's time. The docs
# check starts one Python that imports them once (``python tests/test_docs.py --serve SOCKET``)
# and puts a ``tractvq`` first on the blocks' PATH that hands its arguments, working folder,
# environment and standard streams to that server over a Unix socket; the server forks, and
# the child runs ``tractvq.cli.main.main()`` exactly as the console script does. Every command
# is a fresh fork of the same pristine process, so nothing leaks between commands. Workers of
# ``torchrun`` (and every command when TRACTVQ_DOCS_TEST_SUBPROCESS=1 is set, or when the
# server is gone) run the installed console script instead.

_WARM_IMPORTS = [
    "numpy", "torch", "nibabel", "dipy.io.streamline", "dipy.tracking.streamline",
    "dipy.segment.bundles", "matplotlib.pyplot", "tractvq.cli.main", "tractvq.io", "tractvq.bundles",
    "tractvq.summary", "tractvq.cache", "tractvq.codes", "tractvq.data", "tractvq.models",
    "tractvq.quantizers", "tractvq.encoding", "tractvq.evaluate", "tractvq.metrics",
    "tractvq.robustness", "tractvq.training",
]
# The viz extra, when installed: importing it starts no thread and touches no GPU (the device
# is made at the first render, in the forked child).
_WARM_OPTIONAL_IMPORTS = [
    "fury", "pygfx", "wgpu", "tractvq.viz.backend", "tractvq.viz.render", "tractvq.viz.latent_map",
    "tractvq.viz.strip",
]

_CLIENT = """#!{python} -S
# tractvq for the docs check: runs the command in the warm server (tests/test_docs.py).
import json, os, socket, struct, sys

if "TORCHELASTIC_RUN_ID" in os.environ or os.environ.get("TRACTVQ_DOCS_TEST_SUBPROCESS"):
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    connection.connect({socket!r})
except OSError:
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
request = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(connection, [struct.pack("!I", len(request)) + request], [0, 1, 2])
reply = b""
while not reply.endswith(b"\\n"):
    chunk = connection.recv(64)
    if not chunk:
        sys.exit("docs-test: the warm tractvq process died")
    reply += chunk
sys.exit(int(reply))
"""


def _run_forked_command(connection: socket.socket) -> int:
    """In the forked child: take over the client's streams, folder and environment; run."""
    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    length = struct.unpack("!I", message[:4])[0]
    data = message[4:]
    while len(data) < length:
        data += connection.recv(length - len(data))
    request = json.loads(data)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["tractvq", *request["argv"]]
    code = 0
    try:
        from tractvq.cli.main import main

        main()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 (report anything, as the interpreter would)
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    connection.sendall(f"{code}\n".encode())
    return code


def serve(socket_path: str) -> None:
    """The warm server: import once, then fork one child per ``tractvq`` command."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tractvq.cli.main.main does
    for name in _WARM_IMPORTS:
        importlib.import_module(name)
    for name in _WARM_OPTIONAL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    parent = os.getppid()

    def _exit_with_parent() -> None:  # never outlive the test session that started it
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=_exit_with_parent, daemon=True).start()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        connection, _ = server.accept()
        if os.fork():
            connection.close()
            continue
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command may wait for its own children
        signal.alarm(BLOCK_TIMEOUT + 60)  # never outlive a block that timed out
        code = 1
        try:
            code = _run_forked_command(connection)
        finally:
            os._exit(code)


@pytest.fixture(scope="session")
def warm_tractvq(tmp_path_factory):
    """A folder whose ``tractvq`` runs commands in the warm server (None: use the real one)."""
    real = shutil.which("tractvq", path=_environment()["PATH"])
    if real is None or os.environ.get("TRACTVQ_DOCS_TEST_SUBPROCESS") or not hasattr(socket, "send_fds"):
        yield None
        return
    folder = tmp_path_factory.mktemp("warm")
    socket_folder = Path(tempfile.mkdtemp(prefix="tvq-"))  # short: Unix socket paths are limited
    socket_path = str(socket_folder / "s")
    log = open(folder / "server.log", "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", socket_path], env=_environment(), stdout=subprocess.PIPE,
        stderr=log, text=True,
    )
    try:
        ready = select.select([server.stdout], [], [], 180)[0] and server.stdout.readline().strip() == "ready"
        if not ready:
            log.flush()
            warnings.warn(
                "the warm tractvq server did not start; running the installed console script:\n"
                + (folder / "server.log").read_text(),
                stacklevel=1,
            )
            yield None
            return
        bin_folder = folder / "bin"
        bin_folder.mkdir()
        client = bin_folder / "tractvq"
        client.write_text(_CLIENT.format(python=sys.executable, real=real, socket=socket_path))
        client.chmod(0o755)
        yield bin_folder
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(socket_folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The tests


def test_the_reader_finds_blocks_commands_and_markers():
    page = """Some text.

<!-- docs-test: replace "--steps 2500" "--steps 2" -->
<!-- docs-test: fresh -->
```bash
tractvq train cache -o run \\
    --steps 2500   # a comment
```

````markdown
```bash
not a block of its own
```
````

<!-- docs-test: skip "needs CUDA GPUs" -->
```console
$ tractvq train cache -o run --device cuda \\
>   --steps 10
output line
$ tractvq --version
tractvq 0.1.0
```
"""
    blocks = read_blocks(ROOT / "page.md", page)
    assert [(block.line, block.language, block.runs) for block in blocks] == [
        (5, "bash", True), (10, "markdown", False), (17, "console", True)
    ]
    train, _, gpu = blocks
    assert train.fresh() and train.skip_reason() is None and marker_problems(train) == []
    assert "--steps 2   # a comment" in train.script() and "2500" not in train.script()
    assert gpu.skip_reason() == "needs CUDA GPUs" and not gpu.fresh()
    assert gpu.script() == "tractvq train cache -o run --device cuda \\\n>   --steps 10\ntractvq --version"

    bad = read_blocks(ROOT / "page.md", '<!-- docs-test: replace "absent" "x" -->\n<!-- docs-test: skip -->\n'
                      '<!-- docs-test: later -->\n```bash\necho\n```\n<!-- docs-test: fresh -->\n```text\nx\n```\n')
    assert marker_problems(bad[0]) == [
        "replace: 'absent' is not in the block",
        'skip needs a reason: <!-- docs-test: skip "REASON" -->',
        "unknown marker 'later' (known: fresh, replace, skip)",
    ]
    assert marker_problems(bad[1]) == ["marker 'fresh' above a block that does not run (text)"]


def test_markers_are_valid():
    problems = [
        f"{block.where}: {problem}"
        for path in DOC_FILES
        for block in read_blocks(path)
        for problem in marker_problems(block)
    ]
    assert problems == []


def test_the_readme_set_up_commands_are_marked_for_ci():
    comments = [comment for block in read_blocks(ROOT / "README.md") for comment in block.comments]
    assert "ci:install" in comments and "ci:test" in comments


def _pages_with_commands() -> list[Path]:
    return [path for path in DOC_FILES if any(block.runs for block in read_blocks(path))]


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_commands(), ids=lambda path: path.name)
def test_every_command_of_the_page_runs(page, working_copy_template, warm_tractvq, tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    folder = None
    for block in read_blocks(page):
        if not block.runs or block.skip_reason():
            continue
        if folder is None or block.fresh():
            folder = tmp_path / f"work-{block.line}"
            shutil.copytree(working_copy_template, folder, symlinks=True)
        try:
            result = run_block(block, folder, scripts, warm_tractvq)
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT} s:\n{block.script()}\n{error.output or ''}")
        if result.returncode != 0:
            pytest.fail(
                f"{block.where}: exit status {result.returncode}\n--- block (as run) ---\n{block.script()}"
                f"--- output (last 4000 characters) ---\n{result.stdout[-4000:]}"
            )


@pytest.mark.slow
def test_the_warm_tractvq_answers_as_the_console_script(warm_tractvq, tmp_path):
    if warm_tractvq is None:
        pytest.skip("the warm server is off (TRACTVQ_DOCS_TEST_SUBPROCESS or no socket.send_fds)")
    for arguments in (["--version"], ["info", "missing.trk"], ["decode", "--nonsense"]):
        warm, real = (
            subprocess.run(["tractvq", *arguments], cwd=tmp_path, env=_environment(folder),
                           capture_output=True, text=True, timeout=120, check=False)
            for folder in (warm_tractvq, None)
        )
        assert (warm.returncode, warm.stdout, warm.stderr) == (real.returncode, real.stdout, real.stderr)
        assert warm.returncode == (0 if arguments == ["--version"] else 2)


def _documented_modules() -> set[str]:
    pattern = re.compile(r"\.\. automodule:: (\S+)|\{automodule\} (\S+)")
    found = set()
    for path in (DOCS / "api").rglob("*.md"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.add(match[1] or match[2])
    return found


def test_the_tests_the_quantizer_page_names_exist():
    """docs/quantizers.md names each method's fidelity tests: they must exist."""
    named = set(re.findall(r"`(test_\w+)`", (DOCS / "quantizers.md").read_text(encoding="utf-8")))
    defined = {
        name
        for path in (ROOT / "tests").glob("test_quantizers*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert len(named) > 50 and sorted(named - defined) == []


def test_every_module_has_an_api_page():
    import tractvq

    modules = {"tractvq"} | {
        info.name for info in pkgutil.walk_packages(tractvq.__path__, "tractvq.")
        if info.name not in {"tractvq._version", "tractvq.weights"} and not info.name.startswith("tractvq.cli")
    }
    missing = sorted(modules - _documented_modules())
    assert missing == [], f"add an automodule for each to a page of docs/api/: {missing}"


@pytest.mark.slow
def test_the_site_builds_without_warnings(tmp_path):
    if sys.version_info < (3, 11):
        pytest.skip("the documentation tools (Sphinx 9, MyST 5) need Python 3.11")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    for page in ["index", "installation", "tutorial", "quantizers", "cli", "api/index", "contributing"]:
        assert (tmp_path / "html" / f"{page}.html").exists(), page


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(sys.argv[2])
