"""The zarr adapter over the service-free backends (memory, local directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import LocalDirStore, MemoryStore, ObjectStore
from tests.zarrstore_contract import ZarrStoreContract


class TestZarrOverMemory(ZarrStoreContract):
    @pytest.fixture
    def inner(self) -> ObjectStore:
        return MemoryStore()


class TestZarrOverLocalDir(ZarrStoreContract):
    @pytest.fixture
    def inner(self, tmp_path: Path) -> ObjectStore:
        return LocalDirStore(tmp_path / "root", durable=False)
