"""Files: atomic writes of Datasets (never a half-written file).

Examples
--------
>>> import tempfile, pathlib, xldensf as xl
>>> ds = xl.simulate("lorenz96", runs=1, seed=0, preset="small")
>>> path = pathlib.Path(tempfile.mkdtemp()) / "l96.nc"
>>> write_netcdf(ds, path) == path
True
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError, expected_found

__all__ = ["atomic_path", "write_netcdf", "json_safe"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    if not target.parent.exists():
        raise DataError(expected_found("output directory", "an existing directory",
                                       str(target.parent)))
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                         dir=target.parent)
    os.close(handle)
    # mkstemp creates the file readable by its owner only; give it the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_netcdf(dataset: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` to netCDF atomically and return the path.

    Parameters
    ----------
    dataset
        Any Dataset xarray can write.
    path
        Destination file; its directory must exist.
    """
    with atomic_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="netcdf4")
    return Path(path)


def json_safe(value: Any, *, strict: bool = False) -> Any:
    """``value`` made of JSON types only, recursively (the one JSON sanitiser of the package).

    numpy arrays become lists, numpy scalars Python scalars, tuples lists, mapping keys
    strings; any other object its ``str``. With ``strict=True`` NaN and infinities become
    ``None`` (strict JSON, as in the benchmark files); otherwise they stay floats.

    Examples
    --------
    >>> json_safe({"a": np.arange(2), 3: (np.float32(0.5), None)})
    {'a': [0, 1], '3': [0.5, None]}
    >>> json_safe([float("nan")], strict=True)
    [None]
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item, strict=strict) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), strict=strict)
    if isinstance(value, np.generic):
        return json_safe(value.item(), strict=strict)
    if isinstance(value, (list, tuple)):
        return [json_safe(item, strict=strict) for item in value]
    if isinstance(value, float):
        return None if strict and not math.isfinite(value) else value
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)
