"""The ``ds.ldensf`` Dataset accessor: thin delegation to the xarray-level functions.

Importing :mod:`xldensf` registers it.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small").isel(run=0)
>>> obs = truth.ldensf.observe(stations=10, noise=0.1, seed=0)
>>> obs.sizes["station"]
10
"""

from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["LDEnSFAccessor"]


@xr.register_dataset_accessor("ldensf")
class LDEnSFAccessor:
    """Data assimilation methods on any CF Dataset: ``ds.ldensf.<method>``."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self._obj = dataset

    def observe(self, stations: Any, **kwargs: Any) -> xr.Dataset:
        """Sample noisy station observations; see :func:`xldensf.observations.observe`."""
        from .observations import observe

        return observe(self._obj, stations, **kwargs)

    def assimilate(self, model: Any, **kwargs: Any) -> xr.Dataset:
        """Assimilate these observations into ``model``; see
        :func:`xldensf.assimilation.assimilate`."""
        from .assimilation import assimilate

        return assimilate(self._obj, model, **kwargs)

    def fit(self, parameters: Any, **kwargs: Any) -> Any:
        """Train a latent surrogate (LDNet [+ encoder]) on these simulation runs; see
        :func:`xldensf.surrogate.fit`."""
        from .surrogate import fit

        return fit(self._obj, parameters, **kwargs)

    def rmse(self, truth: xr.Dataset, variables: Any = None) -> xr.Dataset:
        """Relative RMSE of this analysis against ``truth`` per variable and time; see
        :func:`xldensf.metrics.relative_rmse`."""
        from .metrics import relative_rmse

        return relative_rmse(self._obj, truth, variables)

    def crps(self, truth: xr.Dataset, variables: Any = None, **kwargs: Any) -> xr.Dataset:
        """Ensemble CRPS against ``truth``; see :func:`xldensf.metrics.crps`."""
        from .metrics import crps

        return crps(self._obj, truth, variables, **kwargs)

    def spread_skill(self, truth: xr.Dataset, variables: Any = None) -> xr.Dataset:
        """Spread/skill ratio against ``truth``; see :func:`xldensf.metrics.spread_skill_ratio`."""
        from .metrics import spread_skill_ratio

        return spread_skill_ratio(self._obj, truth, variables)

    def plot(self, truth: xr.Dataset | None = None, **kwargs: Any) -> Any:
        """Truth / analysis mean / error / spread panels (maps on lat/lon grids); see
        :func:`xldensf.plot.plot_analysis`."""
        from .plot import plot_analysis

        return plot_analysis(self._obj, truth, **kwargs)
