"""Exceptions of tractvq.

Every error a user can cause by their input is a :class:`TractvqError`, a
:class:`ValueError` whose message starts with the file it concerns and then says the
problem, e.g. ``"data/sub-01__AF_L.tck: .tck files carry no spatial reference; ..."``.
The command line prints that message on one line and exits with status 2.
"""

from __future__ import annotations

import os

__all__ = ["ModelError", "OutputError", "TractogramError", "TractvqError"]


class TractvqError(ValueError):
    """A problem with a file the user gave, named in the message.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file or folder the problem is about.
    problem : str
        What is wrong, as a sentence fragment without the path.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")

    def __reduce__(self):
        # Rebuilt from (path, problem), not from the message: the error crosses processes
        # (tractvq.study's workers) as it was raised.
        return type(self), (self.path, self.problem)


class TractogramError(TractvqError):
    """A tractogram, a reference or a dataset folder cannot be read or used."""


class OutputError(TractvqError):
    """An output cannot be written: it exists (and ``force`` was not given) or its folder
    is missing or not writable."""


class ModelError(TractvqError):
    """A model or training checkpoint cannot be read, is not one, or does not fit the model
    it describes (missing, unexpected or mis-shaped weights)."""
