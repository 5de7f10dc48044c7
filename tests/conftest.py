import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The networks in tests are tiny: one thread avoids OpenMP oversubscription on shared 2-core machines.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
