"""Package-wide options, set with :func:`set_options` (as in ``xarray.set_options``).

Examples
--------
>>> import xldensf as xl
>>> with xl.set_options(progress=False):
...     xl.get_options()["progress"]
False
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .errors import ConfigurationError, UnknownNameError, XLDEnSFError, expected_found

__all__ = [
    "set_options", "get_options", "progress_enabled", "resolve_seed", "resolve_device",
    "resolve_dtype",
]

_OPTIONS: dict[str, Any] = {"progress": True}
_VALIDATORS: dict[str, Callable[[Any], bool]] = {"progress": lambda value: isinstance(value, bool)}


def get_options() -> dict[str, Any]:
    """A copy of the current options."""
    return dict(_OPTIONS)


class set_options:  # noqa: N801 - lower case like xarray.set_options
    """Set options globally or, as a context manager, for a block.

    Parameters
    ----------
    progress : bool
        Show progress bars (``tqdm.auto``) on long work. Default ``True``.
    """

    def __init__(self, **options: Any) -> None:
        self._previous = {}
        for name, value in options.items():
            if name not in _OPTIONS:
                raise UnknownNameError(expected_found("option", _OPTIONS, name))
            if not _VALIDATORS[name](value):
                raise XLDEnSFError(expected_found(f"option {name}", "a bool", value))
            self._previous[name] = _OPTIONS[name]
        _OPTIONS.update(options)

    def __enter__(self) -> set_options:
        return self

    def __exit__(self, *exc: object) -> None:
        _OPTIONS.update(self._previous)


def progress_enabled(progress: bool | None) -> bool:
    """Resolve a per-call ``progress`` argument against the global option."""
    return _OPTIONS["progress"] if progress is None else bool(progress)


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random seed when it is ``None`` (to be recorded in attrs).

    Examples
    --------
    >>> resolve_seed(7)
    7
    >>> 0 <= resolve_seed(None) < 2**31 - 1
    True
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**31 - 1))
    return int(seed)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Return a floating torch dtype from a dtype or its name; float32 and float64 only.

    Examples
    --------
    >>> resolve_dtype("float32")
    torch.float32
    """
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in (torch.float32, torch.float64):
        return dtype  # type: ignore[return-value]
    raise ConfigurationError(expected_found("dtype", ["float32", "float64"], dtype))


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Return a usable torch device; ``None`` means CPU.

    Examples
    --------
    >>> resolve_device(None)
    device(type='cpu')
    """
    if device is None:
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigurationError(
            expected_found("device", "'cpu', 'cuda', 'cuda:N' or a torch.device", device)
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            expected_found("device", "'cpu' (no CUDA device is available here)", str(device))
        )
    return resolved
