"""Fixtures shared by the storage tests."""

from tests.flows.storage.test_storage import clean, inputs

__all__ = ["clean", "inputs"]
