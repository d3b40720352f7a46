"""The zarr adapter over the real S3 server of the stack, signed and with unsigned payloads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from contracts.settings import Settings
from storage import ObjectStore, S3Store
from tests.zarrstore_contract import ZarrStoreContract

pytestmark = pytest.mark.integration


def _s3(unsigned: bool) -> S3Store:
    settings = Settings()
    return S3Store.from_settings(settings.model_copy(update={"s3_unsigned_payload": unsigned}))


@pytest.fixture(params=[False, True], ids=["signed", "unsigned"])
def inner(request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    """A unique ``tests/zarr-<id>/`` view of the bucket, emptied afterwards."""
    s3 = _s3(request.param)
    view = s3.scoped(f"tests/zarr-{uuid.uuid4().hex[:12]}")
    yield view
    for info in list(view.list()):
        view.delete(info.key)
    s3.close()


class TestZarrOverS3(ZarrStoreContract):
    """Every adapter case against versitygw."""
