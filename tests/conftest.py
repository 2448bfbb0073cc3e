import os

import pytest
import torch

# The fused sparse kernel's tests run Triton kernels on the CPU through Triton's interpreter,
# which Triton reads as it is first imported (its library functions are jitted then); on a
# machine with a GPU the kernels are compiled instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shipped_smollm2() -> None:
    """The shipped SmolLM2 converted into its cache folder before a test loads it. pytest-xdist's
    workers may ask at the same time, and a conversion replaces the folder: a file lock lets the
    first convert and the others find the folder made."""
    from filelock import FileLock

    from maskgraph.hf.models import cache_dir, load_model

    folder = cache_dir("smollm2")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / ".smollm2.lock")):
        load_model("smollm2")
