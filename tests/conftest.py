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


@pytest.fixture
def float64():
    """float64 models make "equal to the brute force" crisp; the default dtype is restored for other tests.
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
