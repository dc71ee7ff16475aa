"""Doctest set-up: no progress bars in examples."""

import pytest
import torch

import xldensf as xl

# Tests and examples are many small tensor operations: one thread avoids the thread
# start-up and contention costs that dominate them on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_progress_bars():
    with xl.set_options(progress=False):
        yield
