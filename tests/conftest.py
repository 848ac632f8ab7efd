import copy
import tomllib
from importlib import resources

import pytest


def builtin_dict(name):
    """A built-in config as a plain dict, to modify in tests."""
    return tomllib.loads((resources.files("clln.configs") / f"{name}.toml").read_text())


@pytest.fixture
def xor_dict():
    return copy.deepcopy(builtin_dict("paper-xor"))


@pytest.fixture
def regression_dict():
    return copy.deepcopy(builtin_dict("paper-regression"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow_build: board builds for ULX3S / Tang Nano 9K, "
                            "skipped unless CLLN_SLOW_BUILDS=1")
