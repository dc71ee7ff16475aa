"""Model files and training checkpoints: safetensors tensors + JSON metadata, no pickle.

Model file
    :func:`save_model` writes ONE file in the `safetensors <https://huggingface.co/docs/
    safetensors>`_ format (any file name; ``.ldensf`` or ``.safetensors`` are customary): the
    weights and normalisation buffers as tensors, and in the header's ``__metadata__`` the
    JSON strings ``config``, ``encoder_config``, ``metadata`` (variables with units,
    coordinates, times, parameter names and ranges, stations), ``seed``, the format name
    ``xldensf-latent-model`` and version, and the xldensf and torch versions.
    :func:`load_model` never unpickles: a missing, truncated, corrupt, foreign or
    incompatible file raises :class:`~xldensf.errors.DataError`.

Training checkpoint
    ``<checkpoint_dir>/training_state.safetensors`` holds the model weights, the best
    weights so far, the optimizer state, the random generator state and, as JSON, the
    progress (phase, step, early-stopping counters) and a fingerprint of data and settings.

Every write goes to a temporary file in the target directory, is flushed to disk and then
moved over the target with :func:`os.replace`, so a file is either the old or the new one,
never half written.

Examples
--------
>>> import tempfile, torch
>>> from pathlib import Path
>>> from xldensf.surrogate import LatentModel, LDNetConfig, load_model
>>> model = LatentModel.untrained(LDNetConfig.small().replace(latent_dim=3),
...                               torch.rand(10, 1), n_variables=1,
...                               parameter_ranges=[(0.0, 2.0)])
>>> path = Path(tempfile.mkdtemp()) / "model.ldensf"
>>> model.save(path)
>>> loaded = load_model(path)
>>> u = torch.zeros(1, 1)
>>> torch.equal(loaded.decode(loaded.unroll(u, 4)), model.decode(model.unroll(u, 4)))
True
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from .._version import __version__
from ..errors import DataError, expected_found
from ..io import atomic_path
from .config import EncoderConfig, LDNetConfig

__all__ = ["save_model", "load_model", "atomic_write_bytes", "read_safetensors",
           "save_training_state", "load_training_state", "FORMAT_NAME", "FORMAT_VERSION",
           "TRAINING_STATE_FILE"]

FORMAT_NAME = "xldensf-latent-model"
FORMAT_VERSION = 1
TRAINING_FORMAT_NAME = "xldensf-training-state"
TRAINING_STATE_FILE = "training_state.safetensors"
#: Largest safetensors header accepted (guards against reading garbage lengths).
_MAX_HEADER_BYTES = 100_000_000


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync,
    :func:`os.replace`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
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


def read_safetensors(path: str | os.PathLike,
                     what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors file; :class:`DataError` when the file
    is missing or is not a valid safetensors file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(expected_found(what, "a readable file", str(path))) from err
    found = f"{path} ({len(data)} bytes) is not a valid safetensors file"
    if len(data) < 8:
        raise DataError(expected_found(what, "a safetensors file", found))
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise DataError(expected_found(what, "a safetensors file", found))
    try:
        header = json.loads(data[8 : 8 + header_length])
        tensors = safetensors.torch.load(data)
    except Exception as err:  # safetensors and json raise several unrelated types
        raise DataError(expected_found(what, "a safetensors file", found)) from err
    metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    return tensors, metadata


def _check_format(metadata: dict[str, str], name: str, path: str | os.PathLike) -> None:
    if metadata.get("format") != name:
        raise DataError(expected_found(f"format of {path}", repr(name),
                                       metadata.get("format", "no xldensf format tag")))
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise DataError(
            expected_found(f"format version of {path}",
                           f"<= {FORMAT_VERSION} (upgrade xldensf to read newer files)", version)
        )


def _json_loads(metadata: dict[str, str], key: str, path: str | os.PathLike) -> Any:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise DataError(expected_found(f"metadata {key!r} of {path}", "a JSON string",
                                       metadata.get(key))) from err


def save_model(model, path: str | os.PathLike) -> None:
    """Write ``model`` (:class:`~xldensf.surrogate.LatentModel`) to one safetensors file.

    Parameters
    ----------
    model
        The model; its tensors are saved in their current dtype.
    path
        Target file (overwritten atomically).
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    encoder_config = None if model.encoder_config is None else model.encoder_config.to_dict()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "encoder_config": json.dumps(encoder_config),
        "metadata": json.dumps(model.metadata.to_dict()),
        "seed": str(model.seed),
        "xldensf_version": __version__,
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata))


def load_model(path: str | os.PathLike, device: torch.device | str | None = None):
    """Read a model written by :func:`save_model` (never unpickles).

    Parameters
    ----------
    path
        The model file.
    device
        Device to put the model on (default CPU).

    Returns
    -------
    LatentModel
        In evaluation mode, with the dtype of the saved tensors.

    Raises
    ------
    DataError
        Missing, truncated, corrupt, foreign or incompatible file.
    """
    from ..options import resolve_device
    from .latent_model import LatentModel, SurrogateMetadata

    tensors, header = read_safetensors(path, "model file")
    _check_format(header, FORMAT_NAME, path)
    try:
        config = LDNetConfig.from_dict(_json_loads(header, "config", path))
        encoder_values = _json_loads(header, "encoder_config", path)
        encoder_config = None if encoder_values is None else EncoderConfig.from_dict(
            encoder_values)
        metadata = SurrogateMetadata.from_dict(_json_loads(header, "metadata", path))
        model = LatentModel(config, metadata, tensors["coordinates"].float(), encoder_config,
                            seed=int(header.get("seed", "0")))
        model = model.to(tensors["coordinates"].dtype)
        model.load_state_dict(tensors, strict=True)
    except DataError:
        raise
    except Exception as err:  # config/metadata/state-dict mismatches of many kinds
        raise DataError(
            expected_found(f"contents of {path}", "a model this xldensf version can build",
                           f"{type(err).__name__}: {err}")
        ) from err
    return model.to(resolve_device(device)).eval()


# ---------------------------------------------------------------------- training state
def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in info["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_training_state(directory: str | os.PathLike, *, model_state: dict[str, torch.Tensor],
                        best_state: dict[str, torch.Tensor] | None,
                        optimizer_state: dict[str, Any] | None, generator: torch.Generator,
                        progress: dict[str, Any], fingerprint: str) -> None:
    """Write a training checkpoint to ``directory`` (atomically; see the module docstring)."""
    tensors = {f"model.{key}": value.detach().cpu().contiguous()
               for key, value in model_state.items()}
    if best_state is not None:
        tensors.update({f"best.{key}": value.detach().cpu().contiguous()
                        for key, value in best_state.items()})
    optimizer_info = None
    if optimizer_state is not None:
        optimizer_tensors, optimizer_info = _flatten_optimizer(optimizer_state)
        tensors.update(optimizer_tensors)
    tensors["rng.generator"] = generator.get_state()
    metadata = {
        "format": TRAINING_FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "progress": json.dumps(progress),
        "optimizer": json.dumps(optimizer_info),
        "fingerprint": fingerprint,
        "xldensf_version": __version__,
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(Path(directory) / TRAINING_STATE_FILE,
                       safetensors.torch.save(tensors, metadata))


def load_training_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Read the checkpoint in ``directory``; ``None`` if there is none.

    Returns
    -------
    dict or None
        Keys ``model_state``, ``best_state`` (or ``None``), ``optimizer_state`` (or
        ``None``), ``generator_state``, ``progress``, ``fingerprint``.
    """
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.exists():
        return None
    tensors, header = read_safetensors(path, "training checkpoint")
    _check_format(header, TRAINING_FORMAT_NAME, path)
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "best": {}}
    for name, value in tensors.items():
        prefix, _, key = name.partition(".")
        if prefix in parts:
            parts[prefix][key] = value
    optimizer_info = _json_loads(header, "optimizer", path)
    return {
        "model_state": parts["model"],
        "best_state": parts["best"] or None,
        "optimizer_state": (None if optimizer_info is None
                            else _unflatten_optimizer(tensors, optimizer_info)),
        "generator_state": tensors["rng.generator"],
        "progress": _json_loads(header, "progress", path),
        "fingerprint": header.get("fingerprint", ""),
    }
