"""The correlator's loop against the in-memory Kafka: what a crash between produce and commit leaves behind.

A correlator writes a task's CCFs and manifest, then publishes its RowCorrelated in the transaction that also
commits the task's offset. Killed after producing but before the commit, it has published nothing: a new
instance (same worker id, so it fences the dead one's transactional id) consumes the task again, finds the
manifest, and publishes the RowCorrelated once.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY

from consumers.correlator import Correlator
from contracts.events import PairTask, RowCorrelated, decode
from contracts.params import ProcessingParams
from contracts.settings import Settings
from contracts.testing import Crash, MemoryBroker
from dsp.product import Coordinates, StationProduct, encode_product
from results.layout import slots_for
from results.manifest import TaskManifest
from results.windows import WindowStore
from results.zarrio import open_root
from storage.layout import Layout
from storage.memory import MemoryStore

WINDOW = "20240101T000000Z"


@pytest.fixture
def world(params: ProcessingParams, products: list[StationProduct]) -> tuple[Settings, MemoryStore, WindowStore, bytes]:
    """A namespace whose store holds three stations' products, and the PairTask of the third one's row."""
    settings = Settings(namespace="t1", processing=params)
    layout, store = Layout(settings.key_prefix), MemoryStore()
    stations = [p.seed_id for p in products[:3]]
    for i, product in enumerate(products[:3]):
        placed = dataclasses.replace(product, coordinates=Coordinates(45.0 + i, 7.0 + i, 10.0 * i))
        store.put(layout.product(WINDOW, product.seed_id), encode_product(placed))
    windows = WindowStore(open_root("memory://"), params)
    windows.ensure(WINDOW, slots_for(2))
    task = PairTask(
        window=WINDOW,
        directory=layout.product_dir(WINDOW),
        row=stations[2],
        columns=stations[:2],
        keys={s: layout.product(WINDOW, s) for s in stations},
        slot=0,
        index={s: i for i, s in enumerate(stations)},
    )
    return settings, store, windows, task.encode()


def correlator(broker: MemoryBroker, settings: Settings, store: MemoryStore, windows: WindowStore) -> Correlator:
    worker = Correlator(
        settings, settings.topics, store, windows, group="correlate", worker_id="w0", clients=broker.clients()
    )
    worker.txn.start()
    worker.consumer.subscribe([settings.topics.pairs])
    return worker


def published() -> float:
    """The correlator's RowCorrelated events counted as published (the process-wide counter)."""
    labels = {"service": "correlate", "type": "RowCorrelated"}
    return REGISTRY.get_sample_value("xcorrflow_events_out_total", labels) or 0.0


def rows(broker: MemoryBroker, settings: Settings) -> list[RowCorrelated]:
    events = [decode(m.value() or b"") for m in broker.messages(settings.topics.results)]
    return [e for e in events if isinstance(e, RowCorrelated)]


def test_a_task_is_published_once_with_its_offset(world: tuple[Settings, MemoryStore, WindowStore, bytes]) -> None:
    settings, store, windows, task = world
    broker = MemoryBroker()
    broker.append(settings.topics.pairs, b"k", task)
    worker = correlator(broker, settings, store, windows)
    assert worker.poll_once() is True
    assert worker.poll_once() is None, "nothing left to consume"
    (row,) = rows(broker, settings)
    assert row.pairs == 2 and store.exists(row.manifest)
    assert broker.committed["correlate"] == {(settings.topics.pairs, 0): 1}
    assert broker.messages(settings.topics.dlq) == []
    manifest = TaskManifest.decode(store.get(row.manifest))
    assert {s: c["latitude"] for s, c in manifest.coordinates.items()} == {
        s: 45.0 + i for i, s in enumerate(sorted(manifest.index, key=manifest.index.__getitem__))
    }, "the positions of the row and its columns ride with the manifest"


@pytest.mark.parametrize("point", ["produce", "send_offsets_to_transaction", "commit_transaction"])
def test_a_crash_before_the_commit_replays_the_task_without_a_double(
    world: tuple[Settings, MemoryStore, WindowStore, bytes], point: str
) -> None:
    settings, store, windows, task = world
    broker = MemoryBroker()
    broker.append(settings.topics.pairs, b"k", task)
    dead = correlator(broker, settings, store, windows)
    broker.crash_at(point)
    counted = published()
    with pytest.raises(Crash):
        dead.poll_once()
    assert rows(broker, settings) == [], "nothing of the dead instance's transaction is visible"
    assert published() == counted, "nor counted as published"
    assert broker.committed.get("correlate", {}) == {}, "nor is its offset committed"
    manifests = [i.key for i in store.list(Layout(settings.key_prefix).manifests(WINDOW))]
    assert len(manifests) == 1, "the CCFs and manifest were durable before the transaction"

    restarted = correlator(broker, settings, store, windows)
    assert restarted.poll_once() is True, "the task is consumed again"
    assert restarted.poll_once() is None
    (row,) = rows(broker, settings)
    assert row.manifest == manifests[0]
    assert broker.committed["correlate"] == {(settings.topics.pairs, 0): 1}
    with pytest.raises(Exception, match="fenced"):
        dead.txn.producer.begin_transaction()  # type: ignore[union-attr]


def test_a_redelivered_task_reads_its_manifest_instead_of_correlating_again(
    world: tuple[Settings, MemoryStore, WindowStore, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, windows, task = world
    broker = MemoryBroker()
    broker.append(settings.topics.pairs, b"k", task)
    broker.append(settings.topics.pairs, b"k", task)  # the same task twice (a producer's retry)
    worker = correlator(broker, settings, store, windows)
    computed: list[str] = []
    original = worker._compute
    monkeypatch.setattr(worker, "_compute", lambda t: computed.append(t.row) or original(t))
    assert worker.poll_once() is True
    assert len(computed) == 1, "the second delivery finds the manifest of the first"
    assert len(rows(broker, settings)) == 2 and len({r.manifest for r in rows(broker, settings)}) == 1
