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

import inspect
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "XLDEnSFError",
    "UnknownNameError",
    "ParameterError",
    "ConfigurationError",
    "DataError",
    "UnitsError",
    "FilterDivergenceError",
    "ExtrapolationWarning",
    "expected_found",
    "check_name",
    "check_names",
    "check_positive_int",
    "warn",
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


class ExtrapolationWarning(UserWarning):
    """A forecast outside the parameter range or time span the surrogate was trained on."""


class FilterDivergenceError(XLDEnSFError, RuntimeError):
    """The filter diverged (NaN/Inf or runaway growth) at a named cycle."""


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


def check_names(what: str, names: Iterable[str], valid: Iterable[str]) -> list[str]:
    """Return ``names`` as a list if each is in ``valid``; raise :class:`UnknownNameError`
    naming the first that is not (the one unknown-field check of the package).

    Examples
    --------
    >>> check_names("variable", ["u", "v"], ["u", "v", "eta"])
    ['u', 'v']
    >>> check_names("variable", ["u", "w"], ["u", "v"])
    Traceback (most recent call last):
    ...
    xldensf.errors.UnknownNameError: variable: expected one of ['u', 'v'], found 'w'
    """
    valid = list(valid)
    names = list(names)
    for name in names:
        check_name(what, name, valid)
    return names


def check_positive_int(what: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer (not a bool); raise
    :class:`ParameterError` otherwise.

    Examples
    --------
    >>> check_positive_int("members", 20)
    20
    >>> check_positive_int("members", 0)
    Traceback (most recent call last):
    ...
    xldensf.errors.ParameterError: members: expected a positive integer, found 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ParameterError(expected_found(what, "a positive integer", value))
    return int(value)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_stacklevel() -> int:
    """Stack level of the first frame outside the xldensf package (as cf-xarray finds it)."""
    frame = inspect.currentframe()
    level = 0
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            break
        frame = frame.f_back
        level += 1
    return max(level, 1)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Emit ``message`` as a warning attributed to the user's line (the first frame outside
    xldensf), so that it shows once per call site and points at the user's code.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("careful")
    >>> str(caught[0].message)
    'careful'
    """
    warnings.warn(message, category, stacklevel=_user_stacklevel())
