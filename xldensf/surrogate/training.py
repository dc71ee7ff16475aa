"""Tensor-level training of the latent surrogate (LD-EnSF, Xiao, Si & Chen, ICLR 2026).

:func:`fit_tensors` trains a :class:`~xldensf.surrogate.LatentModel` in up to three phases:

1. ``"ldnet"`` — F and R jointly: roll the latent state out from the (shifted) start for a
   mini-batch of training runs and fit R(s_k, x) to the normalised fields at random points
   of every frame (mean squared error);
2. ``"reconstruction"`` — freeze the latent trajectories of the training runs (F fixed)
   and fine-tune R alone;
3. ``"encoder"`` (when stations are given) — train the LSTM encoder to map noisy
   observation histories at the stations to the LDNet latent trajectory (rolled out with
   the true parameters) and the true normalised parameters. The relative noise level is
   drawn uniformly in ``[0, max_noise]`` per run and step.

Each phase uses Adam with a cosine learning-rate schedule (a pure function of the step, so
there is no scheduler state), validates on held-out runs every ``validate_every`` steps,
stops early after ``patience`` validations without improvement and ends with the best
weights. A tqdm progress bar shows the running loss (switch off with
``xl.set_options(progress=False)``). With a ``checkpoint_dir`` the whole training state is
saved every ``checkpoint_every`` steps (:mod:`~xldensf.surrogate.checkpoint`); calling
:func:`fit_tensors` again with the same arguments resumes, and on CPU ends with weights
bitwise equal to those of an uninterrupted run.

Examples
--------
>>> import torch
>>> from xldensf.surrogate import LDNetConfig, fit_tensors
>>> x = torch.linspace(0, 1, 16)[:, None]                       # (points, dim)
>>> times = torch.arange(5.0)
>>> speeds = torch.linspace(0.5, 1.5, 6)[:, None]               # (runs, parameters)
>>> fields = torch.sin(6 * (x.T - 0.05 * speeds[:, :, None] * times[:, None]))
>>> fields = fields[:, :, None, :]                              # (runs, time, variables, points)
>>> config = LDNetConfig.small().replace(latent_dim=2, steps=20, finetune_steps=5,
...                                      reconstruction_width=16, dynamics_width=8)
>>> model = fit_tensors(fields, x, times, speeds, config=config, seed=0)
>>> model.decode(model.unroll(model.normalize_parameters(speeds[:2]))).shape
torch.Size([2, 5, 1, 16])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigurationError, DataError, expected_found
from ..options import progress_enabled, resolve_device
from .checkpoint import load_training_state, save_training_state
from .config import EncoderConfig, LDNetConfig
from .metadata import SurrogateMetadata
from .model import LatentModel
from .normalization import AffineNormalizer

__all__ = ["fit_tensors", "cosine_learning_rate", "split_runs", "PHASES"]

logger = logging.getLogger(__name__)

#: Training phases, in order.
PHASES = ("ldnet", "reconstruction", "encoder")
#: Points per frame used for validation (an even stride over the grid when it is larger).
_VALIDATION_POINTS = 256
#: Relative time-step spacing tolerance for the training times.
_UNIFORM_TIMES_RTOL = 1e-6

Callback = Callable[[str, int, float], None]


def cosine_learning_rate(step: int, steps: int, start: float, end: float,
                         warmup: int = 0) -> float:
    """Cosine decay from ``start`` to ``end`` (step ``steps``), after a linear warm-up from
    ``start / warmup`` over the first ``warmup`` steps.

    Examples
    --------
    >>> cosine_learning_rate(0, 10, 1e-2, 1e-4), cosine_learning_rate(10, 10, 1e-2, 1e-4)
    (0.01, 0.0001)
    >>> cosine_learning_rate(0, 10, 1e-2, 1e-4, warmup=2)
    0.005
    """
    if step < warmup:
        return start * (step + 1) / warmup
    fraction = min((step - warmup) / max(steps - warmup, 1), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * fraction))


def split_runs(n_runs: int, validation_fraction: float,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random split of run indices into (training, validation).

    At least one run is held out when ``validation_fraction > 0``, and at least one run is
    left for training; :class:`~xldensf.errors.DataError` when that is impossible.

    Examples
    --------
    >>> train, valid = split_runs(10, 0.2, seed=0)
    >>> len(train), len(valid)
    (8, 2)
    """
    n_valid = 0 if validation_fraction == 0 else max(1, round(validation_fraction * n_runs))
    if n_runs - n_valid < 1:
        raise DataError(
            expected_found("number of runs", f">= {n_valid + 1} to hold out {n_valid} for "
                           f"validation (validation_fraction={validation_fraction:g})", n_runs)
        )
    order = torch.randperm(n_runs, generator=torch.Generator().manual_seed(int(seed)))
    return order[n_valid:].sort().values, order[:n_valid].sort().values


# ---------------------------------------------------------------------- input checks
def _as_float_tensor(values: Any, what: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64)
                                 if not isinstance(values, torch.Tensor) else values)
    except (TypeError, ValueError) as err:
        raise DataError(expected_found(what, "a numeric array", type(values).__name__)) from err
    tensor = tensor.detach().to(torch.float64).cpu()
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise DataError(expected_found(what, "finite values (no NaN/Inf)", f"{bad} non-finite"))
    return tensor


def _check_inputs(fields: Any, coords: Any, times: Any, parameters: Any, stations: Any):
    fields = _as_float_tensor(fields, "fields")
    coords = _as_float_tensor(coords, "coords")
    times = _as_float_tensor(times, "times")
    parameters = _as_float_tensor(parameters, "parameters")
    if fields.ndim != 4:
        raise DataError(expected_found("fields shape", "(runs, time, n_variables, n_points)",
                                       tuple(fields.shape)))
    runs, n_times, _, n_points = fields.shape
    if coords.ndim != 2 or coords.shape[0] != n_points or not 1 <= coords.shape[1] <= 3:
        raise DataError(expected_found("coords shape", f"({n_points}, dim) with dim 1-3",
                                       tuple(coords.shape)))
    if times.shape != (n_times,) or n_times < 2:
        raise DataError(expected_found("times shape", f"({n_times},) with >= 2 frames",
                                       tuple(times.shape)))
    steps = torch.diff(times)
    if (steps <= 0).any() or (steps - steps[0]).abs().max() > _UNIFORM_TIMES_RTOL * steps[0]:
        raise DataError(expected_found("times", "uniformly spaced, increasing frames",
                                       times[:5].tolist()))
    if parameters.ndim != 2 or parameters.shape[0] != runs or parameters.shape[1] < 1:
        raise DataError(expected_found("parameters shape", f"({runs}, n_parameters >= 1)",
                                       tuple(parameters.shape)))
    if stations is not None:
        stations = torch.as_tensor(np.asarray(stations)).long().reshape(-1)
        if len(stations) == 0 or stations.min() < 0 or stations.max() >= n_points:
            raise DataError(expected_found("stations", f"point indices in [0, {n_points})",
                                           stations.tolist()[:10]))
    return fields, coords, times, parameters, stations


def _fingerprint(*tensors: torch.Tensor, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for tensor in tensors:
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(str(array.shape).encode())
        digest.update(array.data)
    return digest.hexdigest()


# ---------------------------------------------------------------------- phase runner
@dataclass
class _Phase:
    name: str
    description: str
    parameters: list[torch.nn.Parameter]
    loss: Callable[[torch.Generator], torch.Tensor]
    validation: Callable[[], float] | None
    steps: int
    learning_rate: float
    final_learning_rate: float
    validate_every: int
    patience: int
    checkpoint_every: int
    warmup_steps: int = 0


class _Trainer:
    """Runs phases in order; checkpoints and resumes them."""

    def __init__(self, model: LatentModel, generator: torch.Generator,
                 checkpoint_dir: str | os.PathLike | None, fingerprint: str,
                 progress: bool | None, callback: Callback | None) -> None:
        self.model, self.generator = model, generator
        self.checkpoint_dir, self.fingerprint = checkpoint_dir, fingerprint
        self.progress, self.callback = progress, callback
        self.completed: list[str] = []
        self.history: dict[str, dict[str, Any]] = {}
        self.resume = None if checkpoint_dir is None else load_training_state(checkpoint_dir)
        if self.resume is not None:
            if self.resume["fingerprint"] != fingerprint:
                raise ConfigurationError(
                    expected_found(f"checkpoint in {checkpoint_dir}",
                                   "one written with the same data, settings and seed",
                                   "a checkpoint of a different training run")
                )
            model.load_state_dict(self.resume["model_state"], strict=True)
            generator.set_state(self.resume["generator_state"])
            self.completed = list(self.resume["progress"]["completed"])
            self.history = dict(self.resume["progress"]["history"])
            logger.info("resuming training from %s (completed: %s)", checkpoint_dir,
                        self.completed)

    def _state(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def _save(self, phase: str | None, step: int, optimizer, best_state, best_loss: float,
              bad_validations: int) -> None:
        if self.checkpoint_dir is None:
            return
        progress = {"phase": phase, "step": step, "best_loss": best_loss,
                    "bad_validations": bad_validations, "completed": self.completed,
                    "history": self.history}
        save_training_state(
            self.checkpoint_dir, model_state=self.model.state_dict(), best_state=best_state,
            optimizer_state=None if optimizer is None else optimizer.state_dict(),
            generator=self.generator, progress=progress, fingerprint=self.fingerprint,
        )

    def run(self, phase: _Phase) -> None:
        if phase.name in self.completed:
            return
        optimizer = torch.optim.Adam(phase.parameters, lr=phase.learning_rate)
        start, best_loss, bad, best_state = 0, math.inf, 0, None
        resume = self.resume
        if resume is not None and resume["progress"]["phase"] == phase.name:
            optimizer.load_state_dict(resume["optimizer_state"])
            start = int(resume["progress"]["step"])
            best_loss = float(resume["progress"]["best_loss"])
            bad = int(resume["progress"]["bad_validations"])
            best_state = resume["best_state"]
        self.resume = None
        began = time.perf_counter()
        running = math.nan
        bar = tqdm(total=phase.steps, initial=start, desc=phase.description, leave=False,
                   disable=not progress_enabled(self.progress), unit="step")
        done = start
        for step in range(start, phase.steps):
            learning_rate = cosine_learning_rate(step, phase.steps, phase.learning_rate,
                                                 phase.final_learning_rate,
                                                 phase.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            optimizer.zero_grad(set_to_none=True)
            loss = phase.loss(self.generator)
            loss.backward()
            optimizer.step()
            done = step + 1
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.95 * running + 0.05 * value
            stop = False
            if phase.validation is not None and done % phase.validate_every == 0:
                validation = phase.validation()
                if validation < best_loss:
                    best_loss, bad, best_state = validation, 0, self._state()
                else:
                    bad += 1
                stop = bad >= phase.patience
                bar.set_postfix(loss=f"{running:.3g}", valid=f"{best_loss:.3g}")
            elif done % 10 == 0:
                bar.set_postfix(loss=f"{running:.3g}")
            bar.update()
            if done % phase.checkpoint_every == 0 or stop:
                self._save(phase.name, done, optimizer, best_state, best_loss, bad)
            if self.callback is not None:
                self.callback(phase.name, done, value)
            if stop:
                logger.info("%s: early stop after %d steps", phase.name, done)
                break
        bar.close()
        final = phase.validation() if phase.validation is not None else math.nan
        if best_state is not None and best_loss < final:
            self.model.load_state_dict(best_state)
            final = best_loss
        self.completed.append(phase.name)
        self.history[phase.name] = {"steps": done, "train_loss": running,
                                    "validation_loss": final,
                                    "seconds": time.perf_counter() - began}
        logger.info("%s: %d steps, validation loss %.4g", phase.name, done, final)
        self._save(None, 0, None, None, math.inf, 0)


# ---------------------------------------------------------------------- sampling
def _frame_activity(fields: torch.Tensor) -> torch.Tensor:
    """Sampling weights ``(runs, time, points)`` from normalised fields
    ``(runs, time, points, variables)``: ``|field - frame median|`` plus ``|change since the
    previous frame|``, each variable scaled by its mean, summed over variables."""
    deviation = (fields - fields.median(dim=2, keepdim=True).values).abs()
    change = torch.zeros_like(fields)
    change[:, 1:] = (fields[:, 1:] - fields[:, :-1]).abs()
    activity = (deviation / deviation.mean(dim=(0, 1, 2)).clamp_min(1e-12)
                + change / change.mean(dim=(0, 1, 2)).clamp_min(1e-12)).sum(dim=-1)
    return activity + 1e-6 * activity.mean()


def _relative_frame_weights(fields: torch.Tensor, train_runs: torch.Tensor,
                            floor: float) -> torch.Tensor:
    """Loss weights ``(runs, time, variables)``: the inverse mean square of each frame of
    each variable, floored at ``floor`` times its training average, scaled to mean 1."""
    mean_square = (fields**2).mean(dim=2)
    floored = torch.maximum(mean_square, floor * mean_square[train_runs].mean(dim=(0, 1)))
    weights = 1.0 / floored
    return weights / weights[train_runs].mean()


# ---------------------------------------------------------------------- public entry
def fit_tensors(
    fields: Any,
    coords: Any,
    times: Any,
    parameters: Any,
    *,
    config: LDNetConfig | None = None,
    encoder_config: EncoderConfig | None = None,
    stations: Any = None,
    metadata: SurrogateMetadata | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    callback: Callback | None = None,
) -> LatentModel:
    """Train a :class:`~xldensf.surrogate.LatentModel` on tensors (see the module docstring).

    Parameters
    ----------
    fields
        ``(runs, time, n_variables, n_points)`` training fields in physical units.
    coords
        ``(n_points, dim)`` point coordinates (dim 1-3).
    times
        ``(time,)`` uniformly spaced frame times.
    parameters
        ``(runs, n_parameters)`` physical parameters of each run.
    config
        LDNet architecture and training (default ``LDNetConfig.small()``).
    encoder_config
        Encoder settings; used when ``stations`` are given (default
        ``EncoderConfig.small()``).
    stations
        Indices of the observed points (``(n_stations,)``) for the observation encoder;
        ``None`` trains no encoder.
    metadata
        Names, units and attributes (:class:`~xldensf.surrogate.SurrogateMetadata`); times,
        parameter ranges and station coordinates are filled in from the data.
    seed
        Seed of the initialisation, the run split and the mini-batches.
    device
        Torch device of the training (default CPU).
    checkpoint_dir
        Directory for resumable checkpoints (created if needed).
    progress
        Progress bars; ``None`` follows :func:`xldensf.set_options`.
    callback
        Called as ``callback(phase, step, loss)`` after every optimiser step (may raise to
        interrupt; a later call with the same ``checkpoint_dir`` resumes).

    Returns
    -------
    LatentModel
        On ``device``, in evaluation mode; ``model.metadata.attrs["xldensf_training"]``
        records the steps and losses of each phase.
    """
    # Long on purpose: the samplers and losses below are closures over this call's
    # normalised training tensors, shared by the phases; keeping them together keeps the
    # order of the random draws (and so the bitwise-reproducible result) in one place.
    config = config or LDNetConfig.small()
    fields, coords, times, parameters, stations = _check_inputs(fields, coords, times,
                                                                parameters, stations)
    runs, n_times, n_variables, n_points = fields.shape
    if stations is not None and encoder_config is None:
        encoder_config = EncoderConfig.small()
    if stations is None:
        encoder_config = None
    metadata = metadata or SurrogateMetadata(
        variables=tuple(f"field{i}" for i in range(n_variables)),
        coordinate_names=tuple(f"x{i}" for i in range(coords.shape[1])),
        parameters=tuple(f"p{i}" for i in range(parameters.shape[1])),
    )
    if (len(metadata.variables), len(metadata.parameters)) != (n_variables, parameters.shape[1]):
        raise DataError(expected_found("metadata variables/parameters",
                                       (n_variables, parameters.shape[1]),
                                       (len(metadata.variables), len(metadata.parameters))))
    metadata = dataclasses.replace(
        metadata,
        times=tuple(times.tolist()),
        parameter_ranges=tuple((float(low), float(high)) for low, high in
                               zip(parameters.amin(0).tolist(), parameters.amax(0).tolist())),
        stations=None if stations is None else tuple(map(tuple, coords[stations].tolist())),
    )
    device = resolve_device(device)
    train_runs, valid_runs = split_runs(runs, config.validation_fraction, seed)
    model = LatentModel(config, metadata, coords.float(), encoder_config, seed=seed)
    model.field_normalizer = AffineNormalizer.from_spread(fields[train_runs], dim=2)
    model = model.to(device).train()

    # Normalised training tensors: fields as (runs, time, points, variables).
    data_fields = model.field_normalizer.normalize(fields.to(device, torch.float32), dim=2)
    data_fields = data_fields.transpose(2, 3).contiguous()
    data_parameters = model.normalize_parameters(parameters.float())
    data_coords = model.coordinate_normalizer.normalize(model.coordinates)
    validation_points = torch.linspace(0, n_points - 1, min(n_points, _VALIDATION_POINTS),
                                       device=device).round().long()
    frames = torch.arange(n_times, device=device)

    settings = {"config": config.to_dict(), "seed": seed,
                "encoder": None if encoder_config is None else encoder_config.to_dict(),
                "stations": None if stations is None else stations.tolist()}
    fingerprint = _fingerprint(fields, coords, times, parameters, settings=settings)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    trainer = _Trainer(model, generator, checkpoint_dir, fingerprint, progress, callback)
    ldnet = model.ldnet

    def sample_runs(batch: int, gen: torch.Generator) -> torch.Tensor:
        picks = torch.randint(len(train_runs), (batch,), generator=gen, device=device)
        return train_runs.to(device)[picks]

    # Per-frame sampling weights (importance sampling) and loss weights (relative error).
    with torch.no_grad():
        activity = _frame_activity(data_fields) if config.importance_fraction > 0 else None
        frame_weights = (_relative_frame_weights(data_fields, train_runs.to(device),
                                                 config.relative_floor)
                         if config.relative_weighting else None)
    n_frames = min(config.frames_per_run or n_times, n_times)
    n_important = round(config.importance_fraction * config.points_per_frame)

    def sample_points(batch_runs: torch.Tensor, batch_frames: torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
        """Point indices ``(batch, frames, points_per_frame)``: uniform, and a fraction
        drawn proportionally to the activity of each frame."""
        shape = (*batch_frames.shape, config.points_per_frame - n_important)
        points = torch.randint(n_points, shape, generator=gen, device=device)
        if n_important == 0:
            return points
        weights = activity[batch_runs[:, None], batch_frames].reshape(-1, n_points)
        important = torch.multinomial(weights, n_important, replacement=True, generator=gen)
        return torch.cat([points, important.reshape(*batch_frames.shape, n_important)], -1)

    def sample_frames(batch: int, gen: torch.Generator) -> torch.Tensor:
        """Frame indices ``(batch, frames_per_run)``, without replacement per run."""
        if n_frames < n_times:
            return torch.rand((batch, n_times), generator=gen,
                              device=device).argsort(dim=1)[:, :n_frames]
        return frames[None, :].expand(batch, -1)

    def field_loss(latents: torch.Tensor, batch_runs: torch.Tensor, batch_frames: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:
        """(Weighted) MSE of R(s, x) at sampled points of the sampled frames; latents
        (batch, time, n) up to the last sampled frame at least."""
        points = sample_points(batch_runs, batch_frames, gen)
        target = data_fields[batch_runs[:, None, None], batch_frames[:, :, None], points]
        batch_latents = torch.gather(latents, 1, batch_frames[:, :, None].expand(
            -1, -1, latents.shape[-1]))
        prediction = ldnet.reconstruct(batch_latents, data_coords[points])
        squared = (prediction - target) ** 2        # (batch, frames, points, variables)
        if frame_weights is not None:
            squared = squared * frame_weights[batch_runs[:, None], batch_frames][:, :, None]
        return torch.mean(squared)

    def field_validation(latents_for: Callable[[torch.Tensor], torch.Tensor]) -> float:
        total = 0.0
        with torch.no_grad():
            for run in valid_runs.tolist():
                latents = latents_for(torch.tensor([run], device=device))
                prediction = ldnet.reconstruct(latents, data_coords[validation_points])
                target = data_fields[run][:, validation_points]
                total += float(torch.mean((prediction[0] - target) ** 2))
        return total / max(len(valid_runs), 1)

    def rolled_out(batch_runs: torch.Tensor, n_steps: int = n_times) -> torch.Tensor:
        return ldnet.unroll(data_parameters[batch_runs], n_steps)

    def rollout_loss(gen: torch.Generator) -> torch.Tensor:
        batch_runs = sample_runs(config.runs_per_batch, gen)
        batch_frames = sample_frames(len(batch_runs), gen)
        # the rollout stops at the last frame fitted in this step
        latents = rolled_out(batch_runs, int(batch_frames.max()) + 1)
        return field_loss(latents, batch_runs, batch_frames, gen)

    def frozen_loss(gen: torch.Generator) -> torch.Tensor:
        batch_runs = sample_runs(config.runs_per_batch, gen)
        batch_frames = sample_frames(len(batch_runs), gen)
        return field_loss(frozen_latents[batch_runs], batch_runs, batch_frames, gen)

    has_validation = len(valid_runs) > 0
    trainer.run(_Phase(
        "ldnet", "LDNet stage 1 (F and R)", list(ldnet.parameters()),
        loss=rollout_loss,
        validation=(lambda: field_validation(rolled_out)) if has_validation else None,
        steps=config.steps, learning_rate=config.learning_rate,
        final_learning_rate=config.final_learning_rate, validate_every=config.validate_every,
        patience=config.patience, checkpoint_every=config.checkpoint_every,
        warmup_steps=config.warmup_steps,
    ))

    with torch.no_grad():
        frozen_latents = ldnet.unroll(data_parameters, n_times)  # (runs, time, n)
    trainer.run(_Phase(
        "reconstruction", "LDNet stage 2 (R on frozen latents)",
        list(ldnet.reconstruction.parameters()),
        loss=frozen_loss,
        validation=((lambda: field_validation(lambda batch: frozen_latents[batch]))
                    if has_validation else None),
        steps=config.finetune_steps, learning_rate=config.learning_rate,
        final_learning_rate=config.final_learning_rate, validate_every=config.validate_every,
        patience=config.patience, checkpoint_every=config.checkpoint_every,
        warmup_steps=config.warmup_steps,
    ))

    if model.encoder is not None:
        _run_encoder_phase(trainer, model, encoder_config, data_fields[:, :, stations.to(device)],
                           frozen_latents, data_parameters, train_runs.to(device),
                           valid_runs.to(device), seed)

    history = json.dumps(trainer.history)
    model.metadata = dataclasses.replace(
        model.metadata, attrs={**model.metadata.attrs, "xldensf_training": history})
    return model.eval()


def _run_encoder_phase(trainer: _Trainer, model: LatentModel, encoder_config: EncoderConfig,
                       clean_observations: torch.Tensor, latents: torch.Tensor,
                       parameters: torch.Tensor, train_runs: torch.Tensor,
                       valid_runs: torch.Tensor, seed: int) -> None:
    """Phase 3: the LSTM encoder on noisy observations (normalised units throughout)."""
    encoder = model.encoder
    device = latents.device
    encoder.latent_normalizer = AffineNormalizer.from_spread(latents[train_runs], dim=-1).to(
        device)
    n_times = latents.shape[1]

    def encoder_loss(batch_runs: torch.Tensor, noise_levels: torch.Tensor,
                     gen: torch.Generator | None) -> torch.Tensor:
        clean = clean_observations[batch_runs]
        noise = torch.randn(clean.shape, generator=gen, device=device)
        latent, estimate = encoder(clean + noise_levels[:, None, None, None] * noise)
        scale = encoder.latent_normalizer.scale
        latent_error = ((latent - latents[batch_runs]) / scale) ** 2
        parameter_error = (estimate - parameters[batch_runs][:, None, :].expand(-1, n_times,
                                                                                 -1)) ** 2
        return latent_error.mean() + parameter_error.mean()

    def training_loss(gen: torch.Generator) -> torch.Tensor:
        picks = torch.randint(len(train_runs), (encoder_config.runs_per_batch,), generator=gen,
                              device=device)
        levels = encoder_config.max_noise * torch.rand(len(picks), generator=gen, device=device)
        return encoder_loss(train_runs[picks], levels, gen)

    def validation() -> float:
        # Fixed noise (its own seeded generator) at the middle of the training noise range.
        gen = torch.Generator(device=device).manual_seed(int(seed) + 1)
        levels = torch.full((len(valid_runs),), 0.5 * encoder_config.max_noise, device=device)
        with torch.no_grad():
            return float(encoder_loss(valid_runs, levels, gen))

    trainer.run(_Phase(
        "encoder", "observation encoder (LSTM)", list(encoder.parameters()),
        loss=training_loss, validation=validation if len(valid_runs) else None,
        steps=encoder_config.steps, learning_rate=encoder_config.learning_rate,
        final_learning_rate=encoder_config.final_learning_rate,
        validate_every=encoder_config.validate_every, patience=encoder_config.patience,
        checkpoint_every=encoder_config.checkpoint_every,
    ))
