"""Safe outputs: never overwrite silently, never leave a half-written file or folder.

Every writer in tractvq goes through this module, the one place that checks output paths
and turns operating-system errors on outputs (no space left, a read-only file system, a
path under a file, a name too long, ...) into a one-line :class:`~tractvq.errors.OutputError`
naming the output (:func:`output_error`).

:func:`atomic_output`
    A file or folder is written to a temporary sibling of the target (same folder, so the
    final rename is atomic on POSIX file systems) and published only when writing
    succeeded. Without ``force`` the publication itself refuses a target that exists (a
    hard link cannot take a name in use), so a file created meanwhile is never replaced.
:func:`merged_output`
    Files are written into a temporary folder, then moved into an existing (or new)
    folder: all of them or none.

Only regular files and folders are ever replaced, and only with ``force``: a device, a pipe
or a socket (or a symbolic link to one) is refused even then.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from tractvq.errors import OutputError, TractvqError

__all__ = [
    "atomic_output",
    "check_folder",
    "check_inside",
    "check_output",
    "check_overwrite",
    "merged_output",
    "output_error",
]

_ALREADY_EXISTS = "already exists; pass force=True (--force) to replace it"
#: What link(2) fails with on file systems without hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK})


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """The one-line error for an OS error met while writing ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The output (not a temporary file).
    error : OSError

    Returns
    -------
    OutputError
        ``"<path>: cannot be written (<the system's reason>)"``.
    """
    return OutputError(path, f"cannot be written ({error.strerror or error})")


def check_output(
    path: str | os.PathLike, *, force: bool = False, directory: bool = False, suffix: str | None = None
) -> Path:
    """Check that ``path`` can be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The file or folder to be written.
    force : bool, optional
        Allow replacing an existing output.
    directory : bool, optional
        The output is a folder (replaced whole), not a file.
    suffix : str, optional
        The extension the name must end in (e.g. ``".npz"``), lower case.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        If the name does not end in ``suffix``; if the parent folder is missing, not a
        folder or not writable; if ``path`` cannot be looked up (a name too long, ...); or
        if it exists and may not be replaced (see :func:`check_overwrite`).
    """
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise OutputError(path, f"the file name must end in {suffix}")
    parent = _parent(path)
    try:
        is_folder = stat.S_ISDIR(os.stat(parent).st_mode)
    except FileNotFoundError:
        raise OutputError(path, f"the output folder {parent} does not exist") from None
    except OSError as error:
        raise output_error(path, error) from error
    if not is_folder:
        raise OutputError(path, f"{parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, f"the output folder {parent} is not writable")
    check_overwrite(path, force=force, directory=directory)
    return path


def check_overwrite(path: str | os.PathLike, *, force: bool = False, directory: bool = False) -> None:
    """Check that writing ``path`` replaces nothing, or only what ``force`` allows.

    Parameters
    ----------
    path : str or os.PathLike
    force : bool, optional
        Allow replacing an existing regular file (or folder, with ``directory``).
    directory : bool, optional
        A folder is to be written, not a file.

    Raises
    ------
    OutputError
        If ``path`` exists and ``force`` is false; even with ``force``, if it is a folder
        where a file is written, not a folder where a folder is written, or a device, pipe
        or socket; if it cannot be looked up.
    """
    mode = _mode(path)
    if mode is None:
        return
    if not force:
        raise OutputError(path, _ALREADY_EXISTS)
    if directory and not stat.S_ISDIR(mode):
        raise OutputError(path, "is not a folder; refusing to replace it with one")
    if not directory and stat.S_ISDIR(mode):
        raise OutputError(path, "is a folder; refusing to replace it with a file")
    if not directory and not stat.S_ISREG(mode):
        raise OutputError(path, "is not a regular file (a device, a pipe or a socket); refusing to replace it")


def check_folder(folder: str | os.PathLike) -> Path:
    """Check that files can be written into ``folder`` by :func:`merged_output`, before any
    work is done: an existing folder, or one to create with its missing parents.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    pathlib.Path
        ``folder`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputError
        If ``folder`` or one of its parents is not a folder, the folder to write in is not
        writable, or the path cannot be looked up.
    """
    folder = Path(folder)
    top = _first_missing(folder)
    if top is not None:
        check_output(top, directory=True)
    elif not folder.is_dir():
        raise OutputError(folder, "is not a folder")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(folder, "is not writable")
    return folder


def check_inside(path: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Refuse ``path`` unless it stays inside ``folder`` once symbolic links are followed.

    Raises
    ------
    OutputError
        If ``path`` leads outside ``folder``.
    """
    real, base = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, base]) != base:
        raise OutputError(
            path, f"leads outside the output folder {folder} (a symbolic link); refusing to write it"
        )


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    force: bool = False,
    directory: bool = False,
    suffix: str | None = None,
    owned: Collection[str] = (),
) -> Iterator[Path]:
    """Yield a temporary path to write; move it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The final file or folder.
    force : bool, optional
        Replace an existing ``path`` (a regular file, or a folder with ``directory``).
    directory : bool, optional
        The output is a folder (created empty before the block) rather than a file. A folder
        is published by one rename; an existing one (``force``) is moved aside first and put
        back if that rename fails.
    suffix : str, optional
        The extension ``path`` must end in (see :func:`check_output`).
    owned : collection of str, optional
        Names an existing folder may hold besides those written again: files this kind of
        output writes at times (e.g. a benchmark's ``settings.json``). ``force`` replaces an
        existing folder only if it holds nothing else, so that no file of the user's is
        deleted.

    Yields
    ------
    pathlib.Path
        Where to write, created empty. It has the same suffix as ``path``; still, give
        writers that append an extension to names without theirs (``np.save``,
        ``np.savez``) an open file rather than this path.

    Raises
    ------
    OutputError
        See :func:`check_output`; also if ``path`` was created meanwhile and ``force`` is
        false, or if creating, writing (an :class:`OSError` in the block) or publishing
        fails. The temporary is removed then, and an existing ``path`` is left as it was.
        A :class:`~tractvq.errors.TractvqError` of the block about a file in the temporary
        folder names that file in ``path`` instead.
    """
    path = check_output(path, force=force, directory=directory, suffix=suffix)
    temporary = _temporary(path, _parent(path), directory=directory)
    try:
        with _as_output_errors(path, temporary):
            yield temporary
            _set_default_permissions(temporary)
            if directory:
                _publish_folder(temporary, path, force=force, owned=owned)
            else:
                _publish_file(temporary, path, force=force)
    finally:
        _remove(temporary)


@contextlib.contextmanager
def merged_output(folder: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; move the files written there into ``folder`` when the
    block succeeds, all of them or none.

    * A missing ``folder`` (with its missing parents) is built whole in a temporary folder
      next to the outermost missing one, and appears by one rename.
    * Into an existing ``folder``, the files are moved once all are written, creating
      subfolders as needed: renames within one file system, which copy nothing and need no
      space. If a move fails or is interrupted (Ctrl-C), the moves made so far are undone:
      the new files and subfolders are removed and the files they replaced are put back.
      Only a crash of the machine during the moves can leave some of them done.

    Files of ``folder`` the block does not write are never touched.

    Parameters
    ----------
    folder : str or os.PathLike
        The output folder.
    force : bool, optional
        Replace the existing files (regular files only) that the block writes again.

    Yields
    ------
    pathlib.Path
        An empty folder standing for ``folder``: write each file at its path relative to it.

    Raises
    ------
    OutputError
        See :func:`check_folder`; also if a file written exists in ``folder`` and ``force``
        is false (or it may not be replaced, see :func:`check_overwrite`), if a path leads
        outside ``folder`` through a symbolic link, or on an OS error while writing (an
        :class:`OSError` in the block) or moving. A :class:`~tractvq.errors.TractvqError`
        of the block about a file in the temporary folder names that file in ``folder``.
    """
    folder = check_folder(folder)
    top = _first_missing(folder)
    root = _temporary(top or folder, _parent(top) if top else folder, directory=True)
    written = root if top is None else root / folder.relative_to(top)
    try:
        with _as_output_errors(folder, written):
            written.mkdir(parents=True, exist_ok=True)
            yield written
            if top is None:
                _move_files(root, folder, force=force)
            else:
                _set_default_permissions(root)
                _publish_folder(root, top, force=False)
    finally:
        _remove(root)


@contextlib.contextmanager
def _as_output_errors(path: Path, temporary: Path) -> Iterator[None]:
    """Turn an :class:`OSError` into an :class:`OutputError` about ``path``, and a tractvq
    error about a file in ``temporary`` into the same error about ``path``."""
    try:
        yield
    except OSError as error:
        raise output_error(path, error) from error
    except TractvqError as error:
        renamed = _renamed(error, temporary, path)
        if renamed is None:
            raise
        raise renamed from error


def _renamed(error: TractvqError, temporary: Path, path: Path) -> TractvqError | None:
    """``error`` naming the same file in the output ``path`` instead of in ``temporary``
    (temporary names mean nothing to users); None if it names no file there."""
    try:
        relative = Path(error.path).relative_to(temporary)
    except (TypeError, ValueError):
        return None
    return type(error)(path / relative, error.problem)


def _parent(path: Path) -> Path:
    """The folder holding ``path`` (also for ``.`` and ``..``)."""
    return path.parent if path.name not in ("", "..") else Path(os.path.abspath(path)).parent


def _mode(path: str | os.PathLike) -> int | None:
    """``path``'s ``st_mode`` (links followed); None if it does not exist."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        raise output_error(path, error) from error


def _first_missing(folder: Path) -> Path | None:
    """The outermost missing folder on the way to ``folder``; None if ``folder`` exists."""
    if _mode(folder) is not None:
        return None
    top = folder
    while top.parent != top and _mode(top.parent) is None:
        top = top.parent
    return top


def _temporary(path: Path, folder: Path, *, directory: bool) -> Path:
    """A new empty file or folder in ``folder``, hidden, named after ``path``."""
    try:
        if directory:
            return Path(tempfile.mkdtemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=folder))
        handle, name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=path.suffix, dir=folder)
        os.close(handle)
        return Path(name)
    except OSError as error:
        raise output_error(path, error) from error


def _publish_file(temporary: Path, path: Path, *, force: bool) -> None:
    """Move a written file onto ``path``: a replacement only with ``force``; without it, a
    name taken meanwhile is refused atomically."""
    if force:
        check_overwrite(path, force=True)
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if ``path`` exists, however recently it was made
    except FileExistsError:
        raise OutputError(path, _ALREADY_EXISTS) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this file system: take the name exclusively, then fill it.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            raise OutputError(path, _ALREADY_EXISTS) from None
        try:
            os.replace(temporary, path)
        except BaseException:
            os.unlink(path)
            raise


def _publish_folder(temporary: Path, path: Path, *, force: bool, owned: Collection[str] = ()) -> None:
    """Rename a written folder onto ``path``; with ``force``, an existing one is moved aside
    first and put back if the rename fails. An existing folder holding any name the new one
    lacks (other than ``owned``) is refused, so that replacing never deletes a file of the
    user's. (Without ``force``, an empty folder made
    meanwhile is replaced: POSIX renames onto empty folders.)"""
    if not force or not os.path.lexists(path):
        try:
            os.rename(temporary, path)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise OutputError(path, _ALREADY_EXISTS) from None  # made meanwhile
            raise
        return
    check_overwrite(path, force=True, directory=True)
    foreign = sorted(set(os.listdir(path)) - set(os.listdir(temporary)) - set(owned))
    if foreign:  # never delete what this output does not write again
        raise OutputError(
            path,
            f"holds {foreign[0]!r}{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, which this"
            " command does not write; refusing to replace the folder, even with --force",
        )
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name[:40]}.", suffix=".old", dir=_parent(path)))
    try:
        os.rename(path, aside / "previous")
        try:
            os.rename(temporary, path)
        except BaseException:
            os.rename(aside / "previous", path)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _move_files(root: Path, folder: Path, *, force: bool) -> None:
    """Move every file under ``root`` to the same place under ``folder``; on any failure,
    undo the moves made."""
    files = sorted(path for path in root.rglob("*") if not path.is_dir())
    undo: list[Callable[[], None]] = []
    aside = None
    try:
        for source in files:
            target = folder / source.relative_to(root)
            _make_folders(target.parent, folder, undo)
            check_inside(target, folder)
            if force and os.path.lexists(target):
                check_overwrite(target, force=True)
                aside = aside or Path(tempfile.mkdtemp(prefix=".replaced.", dir=root))
                backup = aside / str(len(undo))
                os.rename(target, backup)
                undo.append(functools.partial(os.rename, backup, target))
            _publish_file(source, target, force=False)
            undo.append(functools.partial(os.unlink, target))
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(OSError):
                step()
        raise


def _make_folders(directory: Path, folder: Path, undo: list[Callable[[], None]]) -> None:
    """Create the missing folders from ``folder`` down to ``directory``, checking that each
    existing one stays inside ``folder``; record how to remove the new ones in ``undo``."""
    current = folder
    for name in directory.relative_to(folder).parts:
        current = current / name
        try:
            os.mkdir(current)
        except FileExistsError:
            if not current.is_dir():
                raise OutputError(current, "is not a folder") from None
            check_inside(current, folder)
        else:
            undo.append(functools.partial(os.rmdir, current))


def _remove(path: Path) -> None:
    """Delete a temporary file or folder if it is still there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _set_default_permissions(path: Path) -> None:
    """Give a temporary output the permissions a plainly created one would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
