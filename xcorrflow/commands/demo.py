"""``xcorrflow demo``: an end-to-end smoke flow on the running stack.

For now it proves the two planes the pipeline streams through: an object goes into S3 and its commit event
through Kafka, and a consumer reads the event back and fetches the object it names. It grows into the full
seismic demo as the pipeline lands.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser("demo", help="end-to-end demo on the running stack (make demo)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Put an object, announce it on Kafka, consume the announcement and read the object back."""
    from confluent_kafka import Consumer, Producer

    from contracts.topics import TopicSpec, delete_topics, ensure_topics
    from xcorrflow.stack.health import s3_client

    settings = load_settings()
    run_id = uuid.uuid4().hex[:8]
    topic, key = f"demo-{run_id}.files", f"runs/demo-{run_id}/hello.txt"
    ensure_topics(settings.bootstrap_servers, [TopicSpec(topic, 1)])
    t0 = time.monotonic()
    s3 = s3_client(settings)
    payload = f"hello from run {run_id}".encode()
    s3.put_object(bucket_name=settings.s3_bucket, object_name=key, data=io.BytesIO(payload), length=len(payload))
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    producer.produce(topic, key=b"demo", value=json.dumps({"key": key, "size": len(payload)}).encode())
    producer.flush(10)
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": f"demo-{run_id}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    msg = None
    while msg is None and time.monotonic() - t0 < 30:
        msg = consumer.poll(0.5)
    consumer.close()
    if msg is None or msg.error():
        print("demo: the event did not come back through Kafka")
        return 1
    event = json.loads(msg.value() or b"{}")
    body = s3.get_object(bucket_name=settings.s3_bucket, object_name=event["key"]).read()
    s3.remove_object(bucket_name=settings.s3_bucket, object_name=key)
    delete_topics(settings.bootstrap_servers, [topic])
    print(f"demo: wrote s3://{settings.s3_bucket}/{key}, announced it on Kafka topic {topic},")
    print(f"      consumed the event and read back {body!r} in {time.monotonic() - t0:.2f} s")
    return 0 if body == payload else 1
