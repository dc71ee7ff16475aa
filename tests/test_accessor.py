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


def test_accessor_defaults_are_the_delegated_functions_defaults():
    """An accessor default that differs from its function's silently changes what a user gets
    (the accessor's ``members=20`` once overrode LD-EnSF's latent default of 200 members)."""
    import inspect

    from xldensf.accessor import LDEnSFAccessor

    checked = 0
    for name, method in vars(LDEnSFAccessor).items():
        function = getattr(method, "delegates_to", None)
        if function is None:
            continue
        accessor_parameters = inspect.signature(method).parameters
        function_parameters = inspect.signature(function).parameters
        for key, parameter in accessor_parameters.items():
            if key == "self" or parameter.kind is parameter.VAR_KEYWORD:
                continue
            assert key in function_parameters, (name, key)
            assert parameter.default == function_parameters[key].default, (
                name, key, parameter.default, function_parameters[key].default)
            checked += 1
    assert checked >= 20
