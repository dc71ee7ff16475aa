"""Files: atomic writes (never a half-written file), the safetensors container, JSON.

- :func:`atomic_path`, :func:`atomic_write_bytes`, :func:`write_netcdf`,
  :func:`write_dataset`: every write goes to a temporary file (or directory, for zarr) in
  the target directory and is then moved over the target with :func:`os.replace`, so a
  file is either the old or the new one.
- :func:`read_dataset`: a netCDF file or a zarr store (a directory ending ``.zarr``) read
  into memory, with one-line :class:`~xldensf.errors.DataError` messages for missing or
  unreadable inputs.
- :func:`write_safetensors`, :func:`read_safetensors`, :func:`check_format`,
  :func:`metadata_json`: the generic container of model files and training checkpoints
  (`safetensors <https://huggingface.co/docs/safetensors>`_ tensors plus string metadata in
  the header, with a format name and version; never pickle).
- :func:`model_file_header`, :func:`read_model_file`, :func:`model_contents`: the one
  header layout of model files (format, config, metadata, seed, versions) and its reading.
- :func:`json_safe`: the one JSON sanitiser.

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
import importlib.util
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import xarray as xr

from ._version import __version__
from .conventions import is_datetime_like, time_encoding
from .errors import DataError, expected_found

__all__ = ["atomic_path", "atomic_write_bytes", "write_netcdf", "write_dataset",
           "read_dataset", "is_zarr_path", "require_zarr", "cf_time_units",
           "write_safetensors",
           "read_safetensors", "check_format", "metadata_json", "json_safe",
           "model_file_header", "read_model_file", "model_contents", "ModelFile"]

#: Largest safetensors header accepted (guards against reading garbage lengths).
MAX_HEADER_BYTES = 100_000_000


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
        Destination file; its directory must exist. Times are written with CF units
        (see :func:`cf_time_units`), so ``xarray.open_dataset`` decodes datetimes.
    """
    dataset = cf_time_units(dataset)
    with atomic_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="netcdf4")
    return Path(path)


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a zarr store (its name ends with ``.zarr``).

    Examples
    --------
    >>> is_zarr_path("analysis.zarr"), is_zarr_path("analysis.nc")
    (True, False)
    """
    return Path(path).suffix.lower() == ".zarr"


def require_zarr(path: str | os.PathLike[str]) -> None:
    """Refuse the zarr store ``path`` with a :class:`~xldensf.errors.DataError` naming the
    extra to install when the zarr package is missing.

    Examples
    --------
    >>> require_zarr("analysis.zarr")  # zarr is installed here
    """
    if importlib.util.find_spec("zarr") is None:
        raise DataError(expected_found(f"zarr store {path}", "the zarr package (pip install "
                                       "'xldensf[dask]')", "zarr not installed"))


def write_dataset(dataset: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` atomically to netCDF, or to zarr if ``path`` ends with ``.zarr``.

    Parameters
    ----------
    dataset
        Any Dataset xarray can write (dask-backed Datasets are computed as they are
        written).
    path
        Destination; its directory must exist. A ``.zarr`` path is written as a zarr store
        (format 2, consolidated metadata) into a temporary directory beside it, which then
        replaces any old store; any other path is written as netCDF by
        :func:`write_netcdf`. Times get CF units (:func:`cf_time_units`) either way.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DataError
        A missing output directory, or a ``.zarr`` path without the zarr package installed.

    Examples
    --------
    >>> import tempfile
    >>> ds = xr.Dataset({"u": ("x", np.arange(3.0))})
    >>> path = write_dataset(ds, Path(tempfile.mkdtemp()) / "u.zarr")
    >>> path.is_dir(), read_dataset(path)["u"].values.tolist()
    (True, [0.0, 1.0, 2.0])
    """
    if not is_zarr_path(path):
        return write_netcdf(dataset, path)
    require_zarr(path)
    target = Path(path)
    if not target.parent.exists():
        raise DataError(expected_found("output directory", "an existing directory",
                                       str(target.parent)))
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                      dir=target.parent))
    old = target.parent / f"{temporary.name}.old"
    try:
        cf_time_units(dataset).to_zarr(temporary, mode="w", zarr_format=2, consolidated=True)
        if target.exists():  # a directory cannot be replaced in one step: move it aside
            os.replace(target, old)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def read_dataset(path: str | os.PathLike[str], what: str = "input") -> xr.Dataset:
    """A netCDF file or zarr store (a path ending ``.zarr``), read into memory.

    Parameters
    ----------
    path
        The file or store. CF times are decoded to datetimes.
    what
        What the file is, for error messages (e.g. ``"truth"``).

    Returns
    -------
    xarray.Dataset
        Loaded values (the file is closed again, so it can be overwritten).

    Raises
    ------
    DataError
        A missing or unreadable file, or a ``.zarr`` store without the zarr package.

    Examples
    --------
    >>> read_dataset("no-such-file.nc", "truth")
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: truth: expected an existing file, found 'no-such-file.nc'
    """
    source = Path(path)
    if not source.exists():
        raise DataError(expected_found(what, "an existing file", str(source)))
    zarr = is_zarr_path(source)
    if zarr:
        require_zarr(source)
    try:
        if zarr:
            opened = xr.open_dataset(source, engine="zarr", chunks=None)
        else:
            opened = xr.open_dataset(source)
        with opened:
            return opened.load()
    except (OSError, ValueError, KeyError, TypeError) as err:
        kind = "a zarr store" if zarr else "a netCDF file"
        raise DataError(expected_found(what, f"{kind} xarray can read",
                                       f"{source} ({type(err).__name__})")) from err


def cf_time_units(dataset: xr.Dataset) -> xr.Dataset:
    """``dataset`` (a shallow copy) with CF time units for writing.

    Datetime64 variables without a ``units`` encoding get ``seconds since <first time>``
    in the proleptic Gregorian calendar (cftime datetimes keep xarray's own encoding);
    numeric times keep their ``units`` (UDUNITS durations such as ``"s"``, or ``"1"`` for
    nondimensional models).

    Examples
    --------
    >>> import numpy as np
    >>> ds = xr.Dataset(coords={"time": np.array(["2011-03-11T05:46"], "datetime64[ns]")})
    >>> cf_time_units(ds).time.encoding["units"]
    'seconds since 2011-03-11T05:46:00'
    """
    out = dataset.copy(deep=False)
    for variable in out.variables.values():
        if is_datetime_like(variable) and np.issubdtype(variable.dtype, np.datetime64) \
                and "units" not in variable.encoding and variable.size:
            valid = variable.values[~np.isnat(variable.values)]
            if valid.size:
                variable.encoding = {**variable.encoding,
                                     **time_encoding(valid.min(), valid)}
    return out


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync,
    :func:`os.replace`); the directory is created if missing.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.bin"
    >>> atomic_write_bytes(target, b"abc"); target.read_bytes()
    b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> None:
    """Write ``tensors`` and the string ``metadata`` (the header's ``__metadata__``) to one
    safetensors file, atomically.

    Parameters
    ----------
    path
        Target file (overwritten atomically; its directory is created if missing).
    tensors
        Contiguous CPU tensors by name.
    metadata
        String values by key; by convention ``format`` and ``format_version`` name the
        file's format (see :func:`check_format`), structured values are JSON strings.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.safetensors"
    >>> write_safetensors(path, {"a": torch.arange(3.0)},
    ...                   {"format": "demo", "format_version": "1"})
    >>> tensors, header = read_safetensors(path, "demo file")
    >>> tensors["a"].tolist(), header["format"]
    ([0.0, 1.0, 2.0], 'demo')
    """
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata))


def read_safetensors(path: str | os.PathLike[str],
                     what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors file (never unpickles).

    Parameters
    ----------
    path
        The file.
    what
        What the file is, for error messages (e.g. ``"model file"``).

    Returns
    -------
    (tensors, metadata)
        CPU tensors by name and the header's string metadata (empty if none).

    Raises
    ------
    DataError
        The file is missing, unreadable, truncated or not a valid safetensors file (the
        header size is checked before the header is parsed).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "bad.safetensors"
    >>> _ = path.write_bytes(b"not a safetensors file")
    >>> read_safetensors(path, "model file")
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: model file: expected a safetensors file, found ...
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(expected_found(what, "a readable file", str(path))) from err
    found = f"{path} ({len(data)} bytes) is not a valid safetensors file"
    if len(data) < 8:
        raise DataError(expected_found(what, "a safetensors file", found))
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise DataError(expected_found(what, "a safetensors file", found))
    try:
        header = json.loads(data[8 : 8 + header_length])
        tensors = safetensors.torch.load(data)
    except Exception as err:  # safetensors and json raise several unrelated types
        raise DataError(expected_found(what, "a safetensors file", found)) from err
    metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    return tensors, metadata


def check_format(metadata: dict[str, str], name: str, version: int,
                 path: str | os.PathLike[str]) -> None:
    """Check the ``format`` name and ``format_version`` of a file's metadata.

    Parameters
    ----------
    metadata
        The string metadata of :func:`read_safetensors`.
    name
        The expected format name.
    version
        The newest version this xldensf reads (older versions are accepted).
    path
        The file, for error messages.

    Raises
    ------
    DataError
        Another (or no) format name, or a newer or malformed version.

    Examples
    --------
    >>> check_format({"format": "demo", "format_version": "1"}, "demo", 1, "x.bin")
    >>> check_format({"format": "demo", "format_version": "2"}, "demo", 1, "x.bin")
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: format version of x.bin: expected <= 1 (upgrade xldensf ...
    """
    if metadata.get("format") != name:
        raise DataError(expected_found(f"format of {path}", repr(name),
                                       metadata.get("format", "no xldensf format tag")))
    found = metadata.get("format_version", "")
    if not found.isdigit() or int(found) > version:
        raise DataError(
            expected_found(f"format version of {path}",
                           f"<= {version} (upgrade xldensf to read newer files)", found)
        )


def metadata_json(metadata: dict[str, str], key: str, path: str | os.PathLike[str]) -> Any:
    """The JSON value stored as the string ``metadata[key]`` of a file.

    Raises
    ------
    DataError
        The key is missing or its value is not valid JSON.

    Examples
    --------
    >>> metadata_json({"config": '{"width": 8}'}, "config", "x.bin")
    {'width': 8}
    """
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise DataError(expected_found(f"metadata {key!r} of {path}", "a JSON string",
                                       metadata.get(key))) from err


def model_file_header(format_name: str, format_version: int, *, config: Any, metadata: Any,
                      seed: int, **extra: Any) -> dict[str, str]:
    """The string header of a model file (the one layout of every xldensf model format).

    Parameters
    ----------
    format_name, format_version
        The file's format (checked on reading by :func:`check_format`).
    config
        The network sizes, stored as the JSON string ``config``.
    metadata
        What ties the model to the data, stored as the JSON string ``metadata``.
    seed
        The training seed, stored as the string ``seed``.
    **extra
        More JSON values by key (e.g. ``encoder_config``), stored as JSON strings.

    Returns
    -------
    dict
        Keys ``format``, ``format_version``, ``config``, the ``extra`` keys, ``metadata``,
        ``seed``, ``xldensf_version`` and ``torch_version``, all strings.

    Examples
    --------
    >>> header = model_file_header("demo", 1, config={"width": 8}, metadata={}, seed=3,
    ...                            encoder_config=None)
    >>> header["format_version"], header["config"], header["encoder_config"], header["seed"]
    ('1', '{"width": 8}', 'null', '3')
    """
    header = {"format": format_name, "format_version": str(format_version),
              "config": json.dumps(config)}
    header.update({key: json.dumps(value) for key, value in extra.items()})
    header.update({"metadata": json.dumps(metadata), "seed": str(seed),
                   "xldensf_version": __version__, "torch_version": torch.__version__})
    return header


@dataclass(frozen=True)
class ModelFile:
    """The contents of a model file, as read by :func:`read_model_file`.

    Attributes
    ----------
    tensors
        CPU tensors by name.
    header
        The string header (see :func:`model_file_header`).
    config, metadata
        The decoded JSON values of ``config`` and ``metadata``.
    seed
        The training seed (0 where the file has none).

    Examples
    --------
    >>> ModelFile({}, {}, {"width": 8}, {}, 0).config
    {'width': 8}
    """

    tensors: dict[str, torch.Tensor]
    header: dict[str, str]
    config: Any
    metadata: Any
    seed: int


def read_model_file(path: str | os.PathLike[str], what: str, format_name: str,
                    format_version: int) -> ModelFile:
    """Read a model file written with a :func:`model_file_header` (never unpickles).

    Parameters
    ----------
    path
        The file.
    what
        What the file is, for error messages (e.g. ``"model file"``).
    format_name, format_version
        The expected format and the newest version this xldensf reads.

    Returns
    -------
    ModelFile
        Tensors, header, decoded ``config`` and ``metadata``, and the seed.

    Raises
    ------
    DataError
        Missing, truncated, corrupt or foreign file, another or newer format, or a
        ``config``, ``metadata`` or ``seed`` that cannot be decoded.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.safetensors"
    >>> write_safetensors(path, {"a": torch.zeros(1)},
    ...                   model_file_header("demo", 1, config=[1], metadata={}, seed=4))
    >>> contents = read_model_file(path, "demo file", "demo", 1)
    >>> contents.config, contents.seed
    ([1], 4)
    """
    tensors, header = read_safetensors(path, what)
    check_format(header, format_name, format_version, path)
    config = metadata_json(header, "config", path)
    metadata = metadata_json(header, "metadata", path)
    seed = header.get("seed", "0")
    try:
        seed_value = int(seed)
    except ValueError as err:
        raise DataError(expected_found(f"metadata 'seed' of {path}", "an integer",
                                       seed)) from err
    return ModelFile(tensors, header, config, metadata, seed_value)


@contextlib.contextmanager
def model_contents(path: str | os.PathLike[str], expected: str) -> Iterator[None]:
    """Turn any error raised while building a model from a file's contents into a
    :class:`~xldensf.errors.DataError` (a :class:`DataError` passes unchanged).

    Parameters
    ----------
    path
        The file, for the message.
    expected
        What the contents should make, e.g. ``"a model this xldensf version can build"``.

    Examples
    --------
    >>> with model_contents("x.bin", "a demo model"):
    ...     {}["width"]
    Traceback (most recent call last):
    ...
    xldensf.errors.DataError: contents of x.bin: expected a demo model, found "KeyError: ...
    """
    try:
        yield
    except DataError:
        raise
    except Exception as err:  # config/metadata/state-dict mismatches of many kinds
        raise DataError(expected_found(f"contents of {path}", expected,
                                       f"{type(err).__name__}: {err}")) from err


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
