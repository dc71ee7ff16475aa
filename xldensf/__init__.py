"""xldensf: fast latent data assimilation (LD-EnSF) for xarray Datasets.

Examples
--------
>>> import xldensf as xl
>>> truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small", progress=False)
>>> sorted(truth.data_vars)
['x']
"""

import warnings

# cf_xarray.units warns when matplotlib (an optional extra here) is missing; silence that
# one message, and only around its first import, so a base install imports cleanly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Import\(s\) unavailable to set up matplotlib",
                            category=UserWarning)
    import cf_xarray.units  # noqa: F401

from . import (
    accessor,  # noqa: F401  (registers ds.ldensf)
    io,
    metrics,
    plot,
    relief,
)
from ._version import __version__
from .assimilation.user_model import ForecastModel, forecast_model, run_model
from .errors import (
    ConfigurationError,
    DataError,
    ParameterError,
    UnitsError,
    UnknownNameError,
    XLDEnSFError,
)
from .options import get_options, set_options
from .simulators import CASES, simulate, simulator
from .surrogate import LatentModel, load_model

__all__ = [
    "__version__",
    "io",
    "relief",
    "metrics",
    "plot",
    "XLDEnSFError",
    "UnknownNameError",
    "ParameterError",
    "ConfigurationError",
    "DataError",
    "UnitsError",
    "set_options",
    "get_options",
    "CASES",
    "simulate",
    "simulator",
    "LatentModel",
    "load_model",
    "ForecastModel",
    "forecast_model",
    "run_model",
]
