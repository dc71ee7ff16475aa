"""Doctest set-up: no progress bars in examples."""

import pytest

import xldensf as xl


@pytest.fixture(autouse=True)
def _no_progress_bars():
    with xl.set_options(progress=False):
        yield
