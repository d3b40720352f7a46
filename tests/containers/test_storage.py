"""The storage contract suite, and the S3-only behaviour, against the S3 server in its container.

The tests are those of tests/integration/storage/test_storage_s3.py, imported so that they run here against the
container's endpoint (the session exports it before any of them asks ``Settings()``).
"""

from __future__ import annotations

from tests.integration.storage.test_storage_s3 import (
    TestS3Store,
    s3,
    store,
    test_20mb_conditional_create_is_idempotent,
    test_20mb_file_streams_up_and_down,
    test_20mb_object_goes_up_as_multipart,
    test_fallback_without_conditional_writes_keeps_the_semantics,
    test_put_if_absent_sends_one_conditional_put,
    test_server_refuses_a_second_conditional_multipart_completion,
    test_server_refuses_a_second_conditional_put_with_412,
    test_small_objects_have_md5_etags_like_the_other_backends,
    test_the_store_detects_conditional_support,
)

__all__ = [
    "TestS3Store",
    "s3",
    "store",
    "test_20mb_conditional_create_is_idempotent",
    "test_20mb_file_streams_up_and_down",
    "test_20mb_object_goes_up_as_multipart",
    "test_fallback_without_conditional_writes_keeps_the_semantics",
    "test_put_if_absent_sends_one_conditional_put",
    "test_server_refuses_a_second_conditional_multipart_completion",
    "test_server_refuses_a_second_conditional_put_with_412",
    "test_small_objects_have_md5_etags_like_the_other_backends",
    "test_the_store_detects_conditional_support",
]
