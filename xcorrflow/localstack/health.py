"""Health of the services the settings point at, whichever stack runs them (native, compose or remote)."""

from __future__ import annotations

from typing import Any

from contracts.settings import Settings
from xcorrflow.localstack.kafka import kafka_metadata_ok
from xcorrflow.localstack.prometheus import prometheus_ready


def s3_client(settings: Settings) -> Any:
    """A minio client for the configured endpoint."""
    from minio import Minio

    return Minio(
        settings.s3_address,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


def s3_ok(settings: Settings) -> tuple[bool, str | None]:
    """True when a signed ListBuckets succeeds; otherwise False and the reason (never a secret)."""
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    try:
        client = s3_client(settings)
        client._http.connection_pool_kw["retries"] = 0  # a health check must answer fast
        client.list_buckets()
    except S3Error as exc:
        return False, f"S3 error {exc.code}"
    except (HTTPError, OSError, ValueError) as exc:
        return False, type(exc).__name__
    return True, None


def ensure_bucket(settings: Settings) -> bool:
    """Create the project bucket if missing. Returns True when it was created."""
    client = s3_client(settings)
    if client.bucket_exists(bucket_name=settings.s3_bucket):
        return False
    client.make_bucket(bucket_name=settings.s3_bucket)
    return True


def check_all(settings: Settings) -> dict[str, Any]:
    """Endpoint and health of Kafka, S3 and Prometheus, as ``xcorrflow status --json`` prints them."""
    s3_healthy, s3_reason = s3_ok(settings)
    report: dict[str, Any] = {
        "kafka": {
            "bootstrap": settings.bootstrap_servers,
            "ok": kafka_metadata_ok(settings),
        },
        "s3": {"endpoint": settings.s3_url, "bucket": settings.s3_bucket, "ok": s3_healthy},
        "prometheus": {"url": settings.prometheus_url, "ok": prometheus_ready(settings.prometheus_url)},
    }
    if s3_reason:
        report["s3"]["error"] = s3_reason
    return report
