import gc
import os

# Headless rendering: EGL works out of the box on the CI machine kind; respect a user's choice.
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

# Tests are sized for 2 CPU cores; one intra-op thread keeps them deterministic and avoids
# oversubscription when pytest runs beside other work.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _unfreeze_the_heap():
    """A real arm's reset freezes the heap (``gc.freeze``) for its control loop; the next test gets
    the normal garbage collector back, so what one test leaves in cycles is freed as usual."""
    yield
    gc.unfreeze()
