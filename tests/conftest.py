"""Shared pytest fixtures."""

import pytest
import torch

import xldensf as xl

# Tests and examples are many small tensor operations: one thread avoids the thread
# start-up and contention costs that dominate them on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """Keep test output clean: progress bars off unless a test turns them on."""
    with xl.set_options(progress=False):
        yield
