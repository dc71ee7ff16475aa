"""The ``ds.ldensf`` Dataset accessor: thin delegation to the xarray-level functions.

Importing :mod:`xldensf` registers it. Each method has the signature of the function it
delegates to (less the Dataset, which is the accessor's) and that function's docstring, so
``help(ds.ldensf.assimilate)`` and Jupyter's Shift-Tab show the full documentation.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> obs = truth.ldensf.observe(stations=10, noise=0.1, seed=0)
>>> obs.sizes["station"]
10
>>> "Parameters" in xl.accessor.LDEnSFAccessor.assimilate.__doc__
True
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import xarray as xr

from .alignment import DEFAULT_TOLERANCE
from .assimilation import assimilate as _assimilate
from .metrics import crps as _crps
from .metrics import relative_rmse as _relative_rmse
from .metrics import rmse as _rmse
from .metrics import spread_skill_ratio as _spread_skill_ratio
from .observations import observe as _observe
from .plot import plot_analysis as _plot_analysis
from .surrogate import fit as _fit

__all__ = ["LDEnSFAccessor"]

Method = TypeVar("Method", bound=Callable[..., Any])


def _documented_by(function: Callable[..., Any]) -> Callable[[Method], Method]:
    """Give the accessor method the delegated function's docstring (its examples stay
    with the function), with a first line that says where the Dataset goes."""
    def decorate(method: Method) -> Method:
        doc = inspect.cleandoc(function.__doc__ or "")
        doc = re.split(r"\n\s*Examples\n-+\n", doc)[0].rstrip()
        target = f"{function.__module__}.{function.__name__}"
        method.__doc__ = (f"``ds.ldensf.{method.__name__}(...)``: :func:`{target}` with this "
                          f"Dataset as its first argument (examples there).\n\n{doc}\n")
        return method
    return decorate


@xr.register_dataset_accessor("ldensf")
class LDEnSFAccessor:
    """Data assimilation methods on any CF Dataset: ``ds.ldensf.<method>``."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self._obj = dataset

    @_documented_by(_observe)
    def observe(self, stations: Any, *, noise: Any = 0.1,
                variables: Sequence[str] | str | None = None, every: int = 1,
                seed: int | None = None) -> xr.Dataset:
        return _observe(self._obj, stations, noise=noise, variables=variables, every=every,
                        seed=seed)

    @_documented_by(_assimilate)
    def assimilate(self, model: Any, *, method: str | None = None, members: int | None = None,
                   seed: int | None = None, progress: bool | None = None,
                   **settings: Any) -> xr.Dataset:
        return _assimilate(self._obj, model, method=method, members=members, seed=seed,
                           progress=progress, **settings)

    @_documented_by(_fit)
    def fit(self, parameters: Sequence[str] | str, variables: Sequence[str] | str | None = None,
            stations: Any = None, preset: str = "small", seed: int | None = None,
            device: Any = None, checkpoint_dir: Any = None, *,
            encoder: Mapping[str, Any] | Any = None, progress: bool | None = None,
            callback: Any = None, **overrides: Any) -> Any:
        return _fit(self._obj, parameters, variables, stations, preset, seed, device,
                    checkpoint_dir, encoder=encoder, progress=progress, callback=callback,
                    **overrides)

    @_documented_by(_rmse)
    def rmse(self, truth: xr.Dataset, variables: Sequence[str] | None = None, *,
             dim: Any = None, member_dim: Hashable | None = None, weights: Any = "area",
             keep_attrs: bool = False, tolerance: float = DEFAULT_TOLERANCE,
             interpolate: bool = False) -> xr.Dataset:
        return _rmse(self._obj, truth, variables, dim=dim, member_dim=member_dim,
                     weights=weights, keep_attrs=keep_attrs, tolerance=tolerance,
                     interpolate=interpolate)

    @_documented_by(_relative_rmse)
    def relative_rmse(self, truth: xr.Dataset, variables: Sequence[str] | None = None, *,
                      dim: Any = None, member_dim: Hashable | None = None,
                      weights: Any = "area", keep_attrs: bool = False,
                      tolerance: float = DEFAULT_TOLERANCE,
                      interpolate: bool = False) -> xr.Dataset:
        return _relative_rmse(self._obj, truth, variables, dim=dim, member_dim=member_dim,
                              weights=weights, keep_attrs=keep_attrs, tolerance=tolerance,
                              interpolate=interpolate)

    @_documented_by(_crps)
    def crps(self, truth: xr.Dataset, variables: Sequence[str] | None = None, *,
             fair: bool = False, dim: Any = None, member_dim: Hashable | None = None,
             weights: Any = "area", keep_attrs: bool = False,
             tolerance: float = DEFAULT_TOLERANCE, interpolate: bool = False,
             engine: str = "numpy") -> xr.Dataset:
        return _crps(self._obj, truth, variables, fair=fair, dim=dim, member_dim=member_dim,
                     weights=weights, keep_attrs=keep_attrs, tolerance=tolerance,
                     interpolate=interpolate, engine=engine)

    @_documented_by(_spread_skill_ratio)
    def spread_skill(self, truth: xr.Dataset, variables: Sequence[str] | None = None, *,
                     dim: Any = None, member_dim: Hashable | None = None,
                     weights: Any = "area", keep_attrs: bool = False,
                     tolerance: float = DEFAULT_TOLERANCE,
                     interpolate: bool = False) -> xr.Dataset:
        return _spread_skill_ratio(self._obj, truth, variables, dim=dim,
                                   member_dim=member_dim, weights=weights,
                                   keep_attrs=keep_attrs, tolerance=tolerance,
                                   interpolate=interpolate)

    @_documented_by(_plot_analysis)
    def plot(self, truth: xr.Dataset | None = None, variables: str | Sequence[str] | None = None,
             *, time: Any = None, frame: int | None = None, ax: Any = None,
             projection: Any = None, stations: xr.Dataset | None = None, cmap: str = "RdBu_r",
             coastlines: bool = True, tolerance: float = DEFAULT_TOLERANCE,
             interpolate: bool = False) -> Any:
        return _plot_analysis(self._obj, truth, variables, time=time, frame=frame, ax=ax,
                              projection=projection, stations=stations, cmap=cmap,
                              coastlines=coastlines, tolerance=tolerance,
                              interpolate=interpolate)
