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
