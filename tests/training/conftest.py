"""Fixtures shared by the training tests."""

import pytest
from train_helpers import STUDENT

from heredity.core.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    """The embedded student's tokenizer, loaded once per test module."""
    return load_tokenizer(STUDENT)
