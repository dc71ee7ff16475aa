"""The error hierarchy of xldensf.

Every error that xldensf raises on purpose derives from :class:`XLDEnSFError`, and its
message says what was expected and what was found.

Examples
--------
>>> import xldensf as xl
>>> try:
...     xl.simulate("tsunamii")
... except xl.XLDEnSFError as err:
...     print(type(err).__name__)
UnknownNameError
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "XLDEnSFError",
    "UnknownNameError",
    "ParameterError",
    "ConfigurationError",
    "DataError",
    "UnitsError",
    "expected_found",
]


class XLDEnSFError(Exception):
    """Root of every error xldensf raises deliberately."""


class UnknownNameError(XLDEnSFError, KeyError, ValueError):
    """A name (case, method, variable, parameter) that is not one of the valid ones."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ParameterError(XLDEnSFError, ValueError):
    """A physical or model parameter that is missing or outside its valid domain."""


class ConfigurationError(XLDEnSFError, ValueError):
    """A configuration that cannot work (unstable time step, bad sizes, dtype/device)."""


class DataError(XLDEnSFError, ValueError):
    """An input Dataset/DataArray or file that does not have what is needed."""


class UnitsError(XLDEnSFError, ValueError):
    """Units that are missing or cannot be converted."""


def expected_found(what: str, expected: object, found: object) -> str:
    """Format the standard message ``"<what>: expected <expected>, found <found>"``.

    Parameters
    ----------
    what
        What was being checked, e.g. ``"case"``.
    expected
        The valid value(s); an iterable of strings is listed sorted.
    found
        The offending value.

    Examples
    --------
    >>> expected_found("case", ["b", "a"], "c")
    "case: expected one of ['a', 'b'], found 'c'"
    """
    if isinstance(expected, Iterable) and not isinstance(expected, str):
        expected_text = f"one of {sorted(expected)!r}"
    else:
        expected_text = str(expected)
    return f"{what}: expected {expected_text}, found {found!r}"


def check_name(what: str, name: str, valid: Iterable[str]) -> str:
    """Return ``name`` if it is in ``valid``; raise :class:`UnknownNameError` otherwise.

    Examples
    --------
    >>> check_name("method", "enkf", ["enkf", "letkf"])
    'enkf'
    """
    valid = list(valid)
    if name not in valid:
        raise UnknownNameError(expected_found(what, valid, name))
    return name
