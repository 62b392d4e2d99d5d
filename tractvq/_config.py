"""Checks shared by the config dataclasses (:class:`~tractvq.models.config.ModelConfig`,
:class:`~tractvq.training.config.TrainConfig`): integer fields, and rebuilding a config from
the JSON data of a checkpoint with unknown keys refused by name.

Private to the package (not a stable API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

__all__ = ["check_integer", "dataclass_from_dict"]


def check_integer(name: str, value, *, minimum: int, maximum: int | None = None) -> None:
    """Raise ValueError unless ``value`` is an ``int`` (not a bool) in ``[minimum, maximum]``.

    Only Python ints pass, so that every config stays JSON-able (a NumPy integer does not).

    Parameters
    ----------
    name : str
        The field, as the message names it.
    value : object
        The value to check.
    minimum : int
        Smallest allowed value.
    maximum : int, optional
        Largest allowed value (none by default).

    Raises
    ------
    ValueError
        ``"<name> must be an integer >= <minimum>, got <value>"`` or
        ``"<name> must be at most <maximum>, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {value!r}")


def dataclass_from_dict(cls, data, *, name: str, nested: Mapping[str, type] | None = None):
    """Build the dataclass ``cls`` from a mapping of its fields, refusing any other key.

    Fields left out take their default.

    Parameters
    ----------
    cls : type
        A dataclass.
    data : Mapping
        Field values, e.g. the output of the config's ``to_dict``.
    name : str
        What ``data`` is, as the messages say it (``"model config"``).
    nested : Mapping of str to type, optional
        Fields that hold a dataclass, built the same way (named by the field) when ``data``
        gives a mapping for them.

    Returns
    -------
    object
        ``cls(**data)``; its own checks run as usual.

    Raises
    ------
    ValueError
        If ``data`` is not a mapping (``"<name> must be a mapping of <cls> fields, ..."``) or
        has keys that are no field (``"unknown <name> key(s) ...; the keys are: ..."``).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{name} must be a mapping of {cls.__name__} fields, got {type(data).__name__}")
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(data) - known, key=repr)
    if unknown:
        raise ValueError(
            f"unknown {name} key(s) {', '.join(map(repr, unknown))}; the keys are: {', '.join(sorted(known))}"
        )
    values = dict(data)
    for key, kind in (nested or {}).items():
        if key in values and not isinstance(values[key], kind):
            values[key] = dataclass_from_dict(kind, values[key], name=key)
    return cls(**values)
