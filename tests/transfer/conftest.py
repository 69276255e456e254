"""Fixtures of the transfer tests: a small tag in the store, the built-in digits."""

from __future__ import annotations

import pytest

from tests.transfer.kit import TAG
from zoo import weights
from zoo.transfer import data


@pytest.fixture
def stored(resnet18_file):
    weights.import_file(resnet18_file, TAG)


@pytest.fixture(scope="module")
def digits():
    return data.digits()
