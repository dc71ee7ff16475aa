"""The held-out truths of the LD-EnSF benchmark, for the benchmark and for scripts.

:func:`benchmark_truths` gives the truths, station layouts and models that
``xldensf benchmark <case> [--quick]`` runs its methods on, without running them: truth
``i`` is ``simulate(seed=1000 + seed + i)`` over the surrogate's training frames, observed
on the trained layout (the encoder's stations, else a regular one; noise seed ``seed + i``)
and on a random layout of the same size the surrogate never saw (``seed + 7919 + i``).
:func:`~xldensf.experiments.run_benchmark` draws its truths here too, so a script that
scores its own variant of a method on these truths sees exactly the benchmark's inputs.

Examples
--------
>>> from xldensf.experiments import resolve_setting
>>> setting, methods = resolve_setting("tsunami", truths=5)
>>> setting.preset, setting.truths, methods[0]
('small', 5, 'free-run')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from ..assimilation import encoder_layout
from ..errors import ConfigurationError, check_name, expected_found
from ..simulators import Simulator, simulate, simulator
from ..surrogate import LatentModel, load_model
from .settings import (
    BENCHMARK_CASES,
    BENCHMARK_METHODS,
    METHODS,
    SETTINGS,
    TRUTH_SEED_OFFSET,
    UNSEEN_LAYOUT_SEED_OFFSET,
    BenchmarkSetting,
    regular_station_count,
    shipped_model_path,
)

__all__ = [
    "BenchmarkTruth",
    "BenchmarkTruths",
    "benchmark_truths",
    "prepare_truth",
    "resolve_setting",
]


def resolve_setting(case: str, quick: bool = True, truths: int | None = None,
                    members: int | None = None, latent_members: int | None = None,
                    methods: Sequence[str] | None = None
                    ) -> tuple[BenchmarkSetting, list[str]]:
    """The benchmark setting with its overrides, and the methods, checked.

    Parameters
    ----------
    case
        A case of :data:`~xldensf.experiments.settings.BENCHMARK_CASES`.
    quick
        The quick setting instead of the paper one.
    truths, members, latent_members
        Overrides of the setting's sizes (``None``: the setting's).
    methods
        Names of :data:`~xldensf.experiments.settings.BENCHMARK_METHODS` (``None``: the
        default rows, :data:`~xldensf.experiments.settings.METHODS`).

    Returns
    -------
    tuple
        The :class:`~xldensf.experiments.settings.BenchmarkSetting` and the method names.

    Raises
    ------
    UnknownNameError
        Unknown case or method.
    ConfigurationError
        Fewer than one truth or two members.

    Examples
    --------
    >>> setting, _ = resolve_setting("tsunami", quick=False, members=10)
    >>> setting.name, setting.members
    ('paper', 10)
    """
    check_name("case", case, sorted(BENCHMARK_CASES))
    methods = list(METHODS if methods is None else methods)
    for method in methods:
        check_name("method", method, BENCHMARK_METHODS)
    overrides = {key: value for key, value in (("truths", truths), ("members", members),
                                                ("latent_members", latent_members))
                 if value is not None}
    setting = dataclasses.replace(SETTINGS["quick" if quick else "paper"], **overrides)
    if setting.truths < 1 or setting.members < 2 or setting.latent_members < 2:
        raise ConfigurationError(expected_found(
            "truths >= 1, members >= 2 and latent_members >= 2", "all",
            (setting.truths, setting.members, setting.latent_members)))
    return setting, methods


@dataclass(frozen=True)
class BenchmarkTruth:
    """One held-out truth of the benchmark, observed on both layouts.

    Parameters
    ----------
    index
        Its number ``i`` in the benchmark.
    seed
        ``seed + i``: the seed of the trained layout's noise and of the filters on it.
    truth
        The simulated truth (one run, the surrogate's training frames).
    observations
        ``"trained"`` and ``"unseen"``: the observation Dataset on each layout.
    parameters
        The true parameters.

    Examples
    --------
    >>> BenchmarkTruth(0, 0, None, {}, {"F": 8.0}).parameters
    {'F': 8.0}
    """

    index: int
    seed: int
    truth: xr.Dataset
    observations: dict[str, xr.Dataset]
    parameters: dict[str, float]


def prepare_truth(case: str, setting: BenchmarkSetting, index: int, seed: int, frames: int,
                  layouts: dict[str, Any], parameter_names: Sequence[str],
                  progress: bool = False) -> BenchmarkTruth:
    """Held-out truth ``index`` of the benchmark: its simulation, observations and true
    parameters (one task of a distributed run).

    Parameters
    ----------
    case, setting
        The case and its :class:`~xldensf.experiments.settings.BenchmarkSetting` (preset,
        noise).
    index, seed
        The truth's number and the benchmark seed: the truth is simulated with seed
        ``1000 + seed + index``, the trained layout observed with seed ``seed + index``.
    frames
        Output frames of the truth (the surrogate's training frames).
    layouts
        ``"trained"`` and ``"unseen"`` (station layouts of ``observe``) and
        ``"unseen_seed"`` (the unseen layout is observed with seed ``unseen_seed + index``),
        as :attr:`BenchmarkTruths.layouts`.
    parameter_names
        The parameters recorded.
    progress
        Progress bar of the simulation.

    Returns
    -------
    BenchmarkTruth

    Examples
    --------
    >>> from xldensf.experiments import SETTINGS
    >>> layouts = {"trained": 4, "unseen": 4, "unseen_seed": 7919}
    >>> truth = prepare_truth("lorenz96", SETTINGS["quick"], 1, 0, 3, layouts, ["F"])
    >>> truth.seed, truth.truth.sizes["time"], truth.observations["unseen"].sizes["station"]
    (1, 3, 4)
    """
    simulated = simulate(case, runs=1, seed=TRUTH_SEED_OFFSET + seed + index,
                         preset=setting.preset, progress=progress, n_outputs=frames).isel(run=0)
    observations = {
        "trained": simulated.ldensf.observe(stations=layouts["trained"], noise=setting.noise,
                                            seed=seed + index),
        "unseen": simulated.ldensf.observe(stations=layouts["unseen"], noise=setting.noise,
                                           seed=layouts["unseen_seed"] + index),
    }
    return BenchmarkTruth(index, seed + index, simulated, observations,
                          {name: float(simulated[name]) for name in parameter_names})


def _check_model(model: Any, full_model: Simulator) -> None:
    meta = model.metadata
    if sorted(meta.variables) != sorted(full_model.variables):
        raise ConfigurationError(expected_found(
            f"surrogate variables of the {full_model.case} case", sorted(full_model.variables),
            sorted(meta.variables)))
    if list(meta.parameters) != list(full_model.parameter_names):
        raise ConfigurationError(expected_found(
            f"surrogate parameters of the {full_model.case} case",
            list(full_model.parameter_names), list(meta.parameters)))
    if meta.grid_shape is None or tuple(meta.grid_shape) != tuple(full_model.grid_shape):
        raise ConfigurationError(expected_found(
            "surrogate grid (train the surrogate on the benchmark preset)",
            tuple(full_model.grid_shape), meta.grid_shape))


@dataclass(frozen=True)
class BenchmarkTruths:
    """The held-out truths ``first`` to ``last - 1`` of one benchmark, with their models and
    layouts; iterating prepares each truth (:class:`BenchmarkTruth`) in turn.

    Build it with :func:`benchmark_truths` or :meth:`from_models`.

    Parameters
    ----------
    case, setting, seed
        The case, its setting and the benchmark seed.
    model, simulator
        The surrogate (its training frames are the truths' frames) and the full model.
    stations
        Stations of the regular layout at the setting's density (the unseen layout's size).
    layouts
        ``"trained"``, ``"unseen"`` and ``"unseen_seed"``, as :func:`prepare_truth` takes.
    first, last
        The truths' numbers, ``range(first, last)``.
    progress
        Progress bars of the truths' simulations.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.experiments import SETTINGS
    >>> layouts = {"trained": "2", "unseen": 2, "unseen_seed": 7919}
    >>> truths = BenchmarkTruths("lorenz96", SETTINGS["quick"], None,
    ...                          xl.simulator("lorenz96", preset="small"), 2, layouts, last=2)
    >>> len(truths), truths.parameter_names
    (2, ['F'])
    """

    case: str
    setting: BenchmarkSetting
    model: Any = field(repr=False)
    simulator: Simulator = field(repr=False)
    stations: int
    layouts: dict[str, Any] = field(repr=False)
    seed: int = 0
    first: int = 0
    last: int = 1
    progress: bool = False

    @classmethod
    def from_models(cls, case: str, setting: BenchmarkSetting, model: Any,
                    full_model: Simulator, seed: int = 0, first: int = 0,
                    last: int | None = None, progress: bool = False) -> BenchmarkTruths:
        """The truths of a benchmark with these models: the model checked against the full
        model (variables, parameters, grid), the layouts drawn.

        Parameters
        ----------
        case, setting, seed
            As :func:`prepare_truth` takes them.
        model, full_model
            The surrogate and the simulator of the case and preset.
        first, last
            The truths' numbers (``last=None``: ``setting.truths``).
        progress
            Progress bars of the truths' simulations.

        Returns
        -------
        BenchmarkTruths

        Raises
        ------
        ConfigurationError
            A surrogate of another case or grid, or no truth between ``first`` and ``last``.

        Examples
        --------
        >>> import xldensf as xl
        >>> from xldensf.experiments import SETTINGS
        >>> from xldensf.surrogate import fit
        >>> runs = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=4)
        >>> surrogate = fit(runs, ["F"], steps=2, finetune_steps=0, seed=0, progress=False)
        >>> truths = BenchmarkTruths.from_models(
        ...     "lorenz96", SETTINGS["quick"], surrogate, xl.simulator("lorenz96", preset="small"))
        >>> len(truths), truths.layouts["unseen"]
        (5, 2)
        """
        _check_model(model, full_model)
        last = setting.truths if last is None else last
        if not 0 <= first < last:
            raise ConfigurationError(expected_found("truths first, last", "0 <= first < last",
                                                    (first, last)))
        stations = regular_station_count(full_model.grid_shape, setting.density)
        if model.encoder is not None and model.metadata.stations is not None:
            trained: Any = encoder_layout(model)
        else:
            per_dim = round(stations ** (1.0 / len(full_model.grid_shape)))
            trained = "x".join([str(per_dim)] * len(full_model.grid_shape))
        layouts = {"trained": trained, "unseen": stations,
                   "unseen_seed": seed + UNSEEN_LAYOUT_SEED_OFFSET}
        return cls(case, setting, model, full_model, stations, layouts, seed, first, last,
                   progress)

    @property
    def frames(self) -> int:
        """Frames of every truth: the surrogate's training frames."""
        return len(self.model.metadata.times)

    @property
    def parameter_names(self) -> list[str]:
        """The parameters of the case, as recorded per truth."""
        return list(self.simulator.parameter_names)

    def __len__(self) -> int:
        return self.last - self.first

    def __iter__(self) -> Iterator[BenchmarkTruth]:
        for index in range(self.first, self.last):
            yield self.truth(index)

    def truth(self, index: int) -> BenchmarkTruth:
        """Truth ``index`` (:func:`prepare_truth` with these models and layouts)."""
        return prepare_truth(self.case, self.setting, index, self.seed, self.frames,
                             self.layouts, self.parameter_names, self.progress)


def benchmark_truths(case: str = "tsunami", *, quick: bool = True, first: int = 0,
                     last: int | None = None, members: int | None = None,
                     latent_members: int | None = None, model: Any = None, seed: int = 0,
                     progress: bool = False) -> BenchmarkTruths:
    """The held-out truths of ``xldensf benchmark <case> [--quick]``, to run a method on.

    Parameters
    ----------
    case
        ``"tsunami"``, ``"atmosphere"``, ``"kolmogorov"`` or ``"lorenz96"``.
    quick
        The quick setting instead of the paper one.
    first, last
        Truths ``range(first, last)`` (``last=None``: the setting's number of truths;
        else the setting's ``truths`` becomes ``last``).
    members, latent_members
        Overrides of the setting's ensemble sizes (full-space, latent), carried in
        :attr:`BenchmarkTruths.setting`.
    model
        A :class:`~xldensf.surrogate.LatentModel`, a path to one, or ``None``: the one
        shipped for the case and preset.
    seed
        The benchmark seed (as :func:`~xldensf.experiments.run_benchmark` takes it).
    progress
        Progress bars of the truths' simulations.

    Returns
    -------
    BenchmarkTruths
        Iterable of :class:`BenchmarkTruth` (simulated when reached), with the setting,
        the surrogate, the simulator and the layouts.

    Raises
    ------
    UnknownNameError
        Unknown case.
    ConfigurationError
        No model given and none shipped; a model of another case or grid; no truth
        between ``first`` and ``last``.

    Examples
    --------
    >>> import xldensf as xl
    >>> from xldensf.surrogate import fit
    >>> runs = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=4)
    >>> surrogate = fit(runs, ["F"], steps=2, finetune_steps=0, seed=0, progress=False)
    >>> truths = benchmark_truths("lorenz96", model=surrogate, first=1, last=3)
    >>> [(truth.index, truth.seed, sorted(truth.observations)) for truth in truths]
    [(1, 1, ['trained', 'unseen']), (2, 2, ['trained', 'unseen'])]
    >>> truths.setting.latent_members, truths.simulator.case
    (200, 'lorenz96')

    The quick tsunami benchmark's first truth, observed on the shipped surrogate's
    stations:

    >>> tsunami = benchmark_truths("tsunami", last=1)
    >>> next(iter(tsunami)).observations["trained"].sizes["station"]
    16
    """
    setting, _ = resolve_setting(case, quick, last, members, latent_members, [])
    full_model = simulator(case, preset=setting.preset, progress=False)
    if isinstance(model, LatentModel):
        resolved = model
    elif model is not None:
        resolved = load_model(model)
    else:
        shipped = shipped_model_path(case, setting.preset)
        if shipped is None:
            raise ConfigurationError(expected_found(
                f"a surrogate of {case}/{setting.preset}", "given or shipped", "none"))
        resolved = load_model(shipped)
    return BenchmarkTruths.from_models(case, setting, resolved, full_model, seed, first,
                                       setting.truths, progress)
