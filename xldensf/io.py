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
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import xarray as xr

from .errors import DataError, expected_found

__all__ = ["atomic_path", "write_netcdf"]


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
