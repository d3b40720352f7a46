"""The zarr adapter over the real S3 server of the stack, signed and with unsigned payloads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from contracts.settings import Settings
from storage import ObjectStore, S3Store
from storage._s3_wire import build_client
from tests.zarrstore_contract import ZarrStoreContract

pytestmark = pytest.mark.integration


def _s3(unsigned: bool) -> S3Store:
    settings = Settings()
    client = build_client(
        settings.s3_address,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
        secure=settings.s3_secure,
        unsigned_payload=unsigned,
    )
    store = S3Store(client, settings.s3_bucket, endpoint=settings.s3_url)
    store.ensure_bucket()
    return store


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
