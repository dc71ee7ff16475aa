"""The ``ds.ldensf`` accessor delegates to the xarray-level functions."""

import pytest

import xldensf as xl


def test_accessor_methods_are_the_documented_ones():
    truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small", n_outputs=3)
    for name in ("observe", "assimilate", "fit"):
        assert callable(getattr(truth.ldensf, name))


def test_fit_through_the_accessor_checks_its_input():
    runs = xl.simulate("lorenz96", runs=6, seed=0, preset="small", n_outputs=5)
    with pytest.raises(xl.DataError, match="G"):
        runs.ldensf.fit(parameters=["G"], seed=0)
