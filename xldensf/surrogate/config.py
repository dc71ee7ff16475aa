"""Typed configurations of the latent surrogate: :class:`LDNetConfig` and :class:`EncoderConfig`.

Each is a frozen dataclass with two presets: ``small()`` (seconds to minutes on a CPU) and
``paper()`` (meant for a GPU); ``LDNetConfig.paper(case)`` has the network sizes of the
LD-EnSF reference scripts (Xiao, Si & Chen 2026) for the tsunami, atmosphere or Kolmogorov
case.

Examples
--------
>>> from xldensf.surrogate import LDNetConfig
>>> LDNetConfig.paper().reconstruction_depth
10
>>> LDNetConfig.small().replace(latent_dim=4).latent_dim
4
>>> small = LDNetConfig.small()
>>> small.runs_per_batch * small.frames_per_run * small.points_per_frame  # points a step
4096
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, check_name, expected_found

__all__ = ["LDNetConfig", "EncoderConfig", "ACTIVATIONS", "PAPER_SIZES", "SMALL_CHANGES"]

#: Activation names accepted by the networks.
ACTIVATIONS = ("tanh", "gelu", "silu")

#: Network sizes of the LD-EnSF reference scripts per benchmark case (Xiao, Si & Chen 2026), used
#: by :meth:`LDNetConfig.paper`.
PAPER_SIZES: dict[str, dict[str, int]] = {
    "tsunami": {"latent_dim": 10, "dynamics_width": 50, "dynamics_depth": 8,
                "reconstruction_width": 300, "reconstruction_depth": 10,
                "fourier_features": 64},
    "atmosphere": {"latent_dim": 50, "dynamics_width": 200, "dynamics_depth": 8,
                   "reconstruction_width": 500, "reconstruction_depth": 15,
                   "fourier_features": 50},
    "kolmogorov": {"latent_dim": 9, "dynamics_width": 200, "dynamics_depth": 9,
                   "reconstruction_width": 500, "reconstruction_depth": 14,
                   "fourier_features": 10},
}

#: Changes to the small preset per simulator case, used by :meth:`LDNetConfig.small` (and so
#: by ``fit(..., preset="small")`` on data of that case): the Kolmogorov flow's vortices
#: want finer Fourier features than the smooth tsunami waves the preset was calibrated on
#: (``benchmarks/results/surrogate_small_kolmogorov.md``).
SMALL_CHANGES: dict[str, dict[str, Any]] = {"kolmogorov": {"fourier_scale": 2.0}}


def _check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(expected_found(name, "a positive integer", value))


class _ConfigMixin:
    def replace(self, **changes: Any):
        """A copy with ``changes``; unknown field names raise
        :class:`~xldensf.errors.ConfigurationError`."""
        fields = {field.name for field in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ConfigurationError(
                expected_found(f"{type(self).__name__} fields", sorted(fields), unknown)
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigurationError."""
        return cls().replace(**values)


@dataclass(frozen=True)
class LDNetConfig(_ConfigMixin):
    """Architecture and training settings of the (improved) LDNet.

    Parameters
    ----------
    latent_dim
        Dimension n of the latent state s.
    dynamics_width, dynamics_depth
        Hidden width and number of hidden layers of the dynamics network F(s, u).
    reconstruction_width, reconstruction_depth
        Width and number of hidden layers of the reconstruction network R(s, x).
    fourier_features
        Number of random Fourier frequencies B (rows); the features are
        ``[sin(2 pi B x), cos(2 pi B x)]``.
    fourier_scale
        Standard deviation of the entries of B, in cycles per unit of normalised
        coordinate (coordinates are scaled to [-1, 1]).
    activation
        ``"tanh"``, ``"gelu"`` or ``"silu"`` (hidden layers of F and R).
    time_scale
        ``dt / dt_ref``: the factor multiplying F in one forward-Euler step between two
        stored frames.
    original
        ``True`` selects the original LDNet (Regazzoni et al. 2024): s_0 = 0 fixed and a
        plain MLP R on ``[x, s]`` (no Fourier features, no residual connections, no latent
        modulation). For the ablation.
    latent_modulation
        ``True``: the latent state also scales and shifts each hidden layer of R (FiLM),
        besides entering its first layer; ``False`` (the default, and the value of model
        files written before this option existed): first layer only. Ignored with
        ``original``.
    steps, finetune_steps
        Adam steps of stage 1 (F and R jointly) and stage 2 (R alone on frozen latents).
    learning_rate, final_learning_rate
        Cosine schedule from the first to the second over each stage.
    runs_per_batch, points_per_frame
        Mini-batch: runs per step, and random grid points per run and frame.
    frames_per_run
        Frames per run and step at which the fields are fitted (random, without
        replacement; the latent state is always rolled out over all frames). ``0``: all.
    importance_fraction
        Fraction of the points of each frame drawn with probability proportional to the
        local activity of the frame (``|field|`` plus ``|change since the previous frame|``,
        normalised, summed over variables); the rest are uniform. Concentrates the steps
        on the wave fronts of localised fields.
    relative_weighting
        Weight the squared error of each (run, frame, variable) by the inverse of the mean
        square of that frame (floored at ``relative_floor`` times the average), so that the
        loss follows the relative RMSE per frame (the paper's score) instead of favouring the
        energetic frames.
    relative_floor
        Floor of the frame mean square, relative to its average over the training data.
    warmup_steps
        Linear learning-rate warm-up at the start of each stage, before the cosine decay.
    validation_fraction
        Fraction of runs held out for validation and early stopping (at least one run).
    validate_every, patience
        Validation period in steps, and how many validations without improvement stop a stage.
    checkpoint_every
        Steps between training checkpoints (when a ``checkpoint_dir`` is given).
    """

    latent_dim: int = 10
    dynamics_width: int = 64
    dynamics_depth: int = 2
    reconstruction_width: int = 128
    reconstruction_depth: int = 4
    fourier_features: int = 64
    fourier_scale: float = 2.0
    activation: str = "tanh"
    time_scale: float = 0.1
    original: bool = False
    latent_modulation: bool = False
    steps: int = 3000
    finetune_steps: int = 1000
    learning_rate: float = 2e-3
    final_learning_rate: float = 1e-4
    runs_per_batch: int = 3
    points_per_frame: int = 128
    frames_per_run: int = 0
    importance_fraction: float = 0.0
    relative_weighting: bool = False
    relative_floor: float = 0.05
    warmup_steps: int = 0
    validation_fraction: float = 0.2
    validate_every: int = 100
    patience: int = 10
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        _check_positive(self, ("latent_dim", "dynamics_width", "dynamics_depth",
                               "reconstruction_width", "reconstruction_depth",
                               "fourier_features", "runs_per_batch", "points_per_frame",
                               "validate_every", "patience", "checkpoint_every"))
        check_name("activation", self.activation, ACTIVATIONS)
        if self.steps < 0 or self.finetune_steps < 0:
            raise ConfigurationError(expected_found("steps, finetune_steps", ">= 0",
                                                    (self.steps, self.finetune_steps)))
        if self.frames_per_run < 0 or self.warmup_steps < 0:
            raise ConfigurationError(expected_found("frames_per_run, warmup_steps", ">= 0",
                                                    (self.frames_per_run, self.warmup_steps)))
        if not (0.0 <= self.importance_fraction <= 1.0 and self.relative_floor > 0):
            raise ConfigurationError(
                expected_found("importance_fraction in [0, 1], relative_floor > 0", "both",
                               (self.importance_fraction, self.relative_floor)))
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigurationError(
                expected_found("validation_fraction", "in [0, 1)", self.validation_fraction)
            )
        if not (self.learning_rate > 0 and self.final_learning_rate > 0 and self.time_scale > 0):
            raise ConfigurationError(
                expected_found("learning_rate, final_learning_rate, time_scale", "> 0",
                               (self.learning_rate, self.final_learning_rate, self.time_scale))
            )

    @classmethod
    def small(cls, case: str | None = None) -> LDNetConfig:
        """Small networks for CPU work, calibrated on the small tsunami (``docs/surrogate.md``):
        SiLU, R residual 4 x 192 with Fourier scale 0.5, many cheap steps of 8 runs x 8
        frames x 64 points, learning rate 5e-3 after a 100-step warm-up; 9000 + 4500 steps,
        about 9.5 minutes on 2 cores (accuracies in ``benchmarks/results/surrogate_small*``).

        ``case``: a simulator case whose changes in :data:`SMALL_CHANGES` apply (the
        Kolmogorov flow: Fourier scale 2.0); ``None`` or another case: none.

        Examples
        --------
        >>> LDNetConfig.small().fourier_scale, LDNetConfig.small("kolmogorov").fourier_scale
        (0.5, 2.0)
        """
        return cls(activation="silu", reconstruction_width=192, fourier_scale=0.5,
                   steps=9000, finetune_steps=4500, learning_rate=5e-3, runs_per_batch=8,
                   frames_per_run=8, points_per_frame=64, warmup_steps=100,
                   validate_every=500).replace(**SMALL_CHANGES.get(case or "", {}))

    @classmethod
    def paper(cls, case: str = "tsunami") -> LDNetConfig:
        """The network sizes of the LD-EnSF reference scripts for one benchmark case
        (Xiao, Si & Chen 2026), with a GPU-scale training schedule.

        ``"tsunami"``: latent 10, F 8 x 50, R residual 10 x 300, 64 Fourier features;
        ``"atmosphere"``: latent 50, F 8 x 200, R residual 15 x 500, 50 Fourier features;
        ``"kolmogorov"``: latent 9, F 9 x 200, R residual 14 x 500, 10 Fourier features.

        Examples
        --------
        >>> LDNetConfig.paper("atmosphere").latent_dim
        50
        """
        check_name("case", case, tuple(PAPER_SIZES))
        return cls(**PAPER_SIZES[case], steps=60000, finetune_steps=20000,
                   learning_rate=1e-3, final_learning_rate=1e-5, runs_per_batch=8,
                   points_per_frame=512, validate_every=500, patience=20,
                   checkpoint_every=2000)


@dataclass(frozen=True)
class EncoderConfig(_ConfigMixin):
    """History-aware LSTM observation encoder and its training.

    Parameters
    ----------
    hidden_size, layers
        LSTM hidden size and number of stacked layers.
    steps
        Adam steps.
    learning_rate, final_learning_rate
        Cosine schedule.
    runs_per_batch
        Runs (whole observation histories) per step.
    max_noise
        Relative observation noise levels are drawn uniformly in ``[0, max_noise]`` per run
        and step; the noise standard deviation is the level times each variable's spread
        (its standard deviation in the training data).
    validate_every, patience, checkpoint_every
        As in :class:`LDNetConfig`.
    """

    hidden_size: int = 64
    layers: int = 2
    steps: int = 2000
    learning_rate: float = 2e-3
    final_learning_rate: float = 1e-4
    runs_per_batch: int = 8
    max_noise: float = 0.2
    validate_every: int = 100
    patience: int = 10
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden_size", "layers", "runs_per_batch", "validate_every",
                               "patience", "checkpoint_every"))
        if self.steps < 0 or self.max_noise < 0:
            raise ConfigurationError(expected_found("steps, max_noise", ">= 0",
                                                    (self.steps, self.max_noise)))

    @classmethod
    def small(cls) -> EncoderConfig:
        """Small LSTM for CPU work."""
        return cls()

    @classmethod
    def paper(cls) -> EncoderConfig:
        """A larger LSTM for GPU work."""
        return cls(hidden_size=256, layers=3, steps=20000, learning_rate=1e-3,
                   final_learning_rate=1e-5, runs_per_batch=32, validate_every=500,
                   patience=20, checkpoint_every=2000)
