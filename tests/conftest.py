"""Shared pytest fixtures."""

import pytest

import xldensf as xl


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """Keep test output clean: progress bars off unless a test turns them on."""
    with xl.set_options(progress=False):
        yield
