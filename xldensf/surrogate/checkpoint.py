"""Resumable training state: ``<checkpoint_dir>/training_state.safetensors``.

The file holds the model weights, the best weights so far, the optimizer state, the random
generator state and, as JSON, the progress (phase, step, early-stopping counters) and a
fingerprint of data and settings, in the safetensors container of :mod:`xldensf.io`
(format ``xldensf-training-state``; written atomically, never unpickled).
:func:`~xldensf.surrogate.fit_tensors` writes it every ``checkpoint_every`` steps and
resumes from it. (Model files are written by :meth:`xldensf.surrogate.LatentModel.save`.)

Examples
--------
>>> import tempfile, torch
>>> directory = tempfile.mkdtemp()
>>> save_training_state(directory, model_state={"w": torch.ones(2)}, best_state=None,
...                     optimizer_state=None, generator=torch.Generator().manual_seed(0),
...                     progress={"phase": "ldnet", "step": 3}, fingerprint="abc")
>>> state = load_training_state(directory)
>>> state["progress"], state["model_state"]["w"].tolist(), state["best_state"]
({'phase': 'ldnet', 'step': 3}, [1.0, 1.0], None)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..io import check_format, metadata_json, read_safetensors, write_safetensors

__all__ = ["save_training_state", "load_training_state", "TRAINING_FORMAT_NAME",
           "TRAINING_FORMAT_VERSION", "TRAINING_STATE_FILE"]

TRAINING_FORMAT_NAME = "xldensf-training-state"
TRAINING_FORMAT_VERSION = 1
TRAINING_STATE_FILE = "training_state.safetensors"

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
        "format_version": str(TRAINING_FORMAT_VERSION),
        "progress": json.dumps(progress),
        "optimizer": json.dumps(optimizer_info),
        "fingerprint": fingerprint,
        "xldensf_version": __version__,
        "torch_version": torch.__version__,
    }
    write_safetensors(Path(directory) / TRAINING_STATE_FILE, tensors, metadata)


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
    check_format(header, TRAINING_FORMAT_NAME, TRAINING_FORMAT_VERSION, path)
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "best": {}}
    for name, value in tensors.items():
        prefix, _, key = name.partition(".")
        if prefix in parts:
            parts[prefix][key] = value
    optimizer_info = metadata_json(header, "optimizer", path)
    return {
        "model_state": parts["model"],
        "best_state": parts["best"] or None,
        "optimizer_state": (None if optimizer_info is None
                            else _unflatten_optimizer(tensors, optimizer_info)),
        "generator_state": tensors["rng.generator"],
        "progress": metadata_json(header, "progress", path),
        "fingerprint": header.get("fingerprint", ""),
    }
