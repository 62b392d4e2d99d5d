"""Safe outputs: never overwrite silently, never leave a half-written file.

Every writer in tractvq goes through :func:`atomic_output`: the content is written to a
temporary sibling of the target (same folder, so the final rename is atomic on POSIX
file systems) and renamed onto the target only when writing succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tractvq.errors import OutputError

__all__ = ["check_output", "atomic_output"]


def check_output(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Check that ``path`` can be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The file or folder to be written.
    force : bool, optional
        Allow replacing an existing output.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        If ``path`` exists and ``force`` is false, or its parent folder is missing or not
        writable.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(path, "already exists; pass force=True (--force) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(path, f"the output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, f"the output folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, force: bool = False, directory: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write; move it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The final file or folder.
    force : bool, optional
        Replace an existing ``path``.
    directory : bool, optional
        The output is a folder (created empty before the block) rather than a file.

    Yields
    ------
    pathlib.Path
        Where to write. It has the same suffix as ``path``, so writers that choose the
        format by extension (DIPY, NumPy) write the right one.

    Raises
    ------
    OutputError
        See :func:`check_output`.
    """
    path = check_output(path, force=force)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if directory:
            temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        else:
            handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=parent)
            os.close(handle)
            temporary = Path(name)
    except OSError as error:
        raise OutputError(path, f"cannot write in the output folder {parent} ({error.strerror})") from error
    try:
        yield temporary
        _set_default_permissions(temporary)
        if directory and path.is_dir():
            # A folder cannot be renamed onto a non-empty one: move the old one aside first.
            previous = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, previous / path.name)
            os.replace(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary)
        elif temporary.exists():
            temporary.unlink()


def _set_default_permissions(path: Path) -> None:
    """Give a temporary output the permissions a plainly created one would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
