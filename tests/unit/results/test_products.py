"""The station-data domain store: objects by (window, station), keys only from the layout."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dsp.product import StationProduct
from results.manifest import TaskManifest
from results.products import ProductStore
from storage.errors import InvalidKey, ObjectConflict, ObjectNotFound
from storage.layout import Layout
from storage.memory import MemoryStore

WINDOW = "20240101T000000Z"


def manifest(row: str, slot: int) -> TaskManifest:
    return TaskManifest(window=WINDOW, row=row, slot=slot, columns=["XX.A..HHZ"], pair_index=[0], n_common=[3])


def test_a_product_is_stored_under_its_layout_key_and_read_back_whole(products: list[StationProduct]) -> None:
    store = MemoryStore()
    domain = ProductStore(store, "ns/")
    product = products[0]
    domain.put(product)
    key = Layout("ns/").product(product.window, product.seed_id)
    assert store.exists(key), "the layout, not the caller, names the object"
    back = domain.get(product.window, product.seed_id)
    assert back.seed_id == product.seed_id and np.array_equal(back.spectra, product.spectra)
    assert domain.info(product.window, product.seed_id).size == len(store.get(key))
    with pytest.raises(ObjectNotFound):
        domain.get(product.window, "XX.NONE..HHZ")


def test_a_second_different_product_never_replaces_the_first(products: list[StationProduct]) -> None:
    domain = ProductStore(MemoryStore(), "")
    product = products[0]
    first = domain.put(product)
    assert domain.put(product).info.etag == first.info.etag, "the same bytes again: the same object"
    other = dataclasses.replace(product, spectra=product.spectra * 2)
    with pytest.raises(ObjectConflict):
        domain.put(other)


def test_raw_station_windows_are_conditional_puts() -> None:
    domain = ProductStore(MemoryStore(), "")
    domain.put_raw(WINDOW, "XX.A..HHZ", b"mseed")
    assert domain.get_raw(WINDOW, "XX.A..HHZ") == b"mseed"
    assert domain.raw_info(WINDOW, "XX.A..HHZ").size == 5
    with pytest.raises(ObjectConflict):
        domain.put_raw(WINDOW, "XX.A..HHZ", b"other")


def test_manifests_of_a_window_skip_an_unreadable_one() -> None:
    store = MemoryStore()
    domain = ProductStore(store, "")
    domain.put_manifest(manifest("XX.B..HHZ", 0))
    domain.put_manifest(manifest("XX.C..HHZ", 16))
    store.put(Layout("").manifest(WINDOW, "XX.D..HHZ", 32), b"{not json")
    assert sorted(m.row for m in domain.manifests(WINDOW)) == ["XX.B..HHZ", "XX.C..HHZ"]
    assert domain.manifest(WINDOW, "XX.C..HHZ", 16).slot == 16
    with pytest.raises(ObjectNotFound):
        domain.manifest(WINDOW, "XX.C..HHZ", 48)


def test_a_listed_key_is_checked_before_the_store_is_asked() -> None:
    store = MemoryStore()
    domain = ProductStore(store, "")
    store.put("prep/x.npz", b"1")
    assert domain.listed("prep/x.npz") and not domain.listed("prep/y.npz")
    with pytest.raises(InvalidKey):
        domain.listed("prep/../../etc/passwd")


def test_a_manifest_carries_the_positions_of_its_stations_and_refuses_a_bad_one() -> None:
    position = {"latitude": 45.1, "longitude": 7.2, "elevation_m": 10.0}
    placed = dataclasses.replace(manifest("XX.B..HHZ", 0), coordinates={"XX.B..HHZ": position})
    assert TaskManifest.decode(placed.encode()).coordinates == {"XX.B..HHZ": position}
    assert TaskManifest.decode(manifest("XX.B..HHZ", 0).encode()).coordinates == {}, "older manifests have none"
    for good, bad in [(b'"latitude":45.1', b'"latitude":"north"'), (b'"elevation_m":10.0', b'"elevation_m":true'),
                      (b'"longitude":7.2,', b"")]:  # fmt: skip
        with pytest.raises(ValueError, match="no numeric latitude"):
            TaskManifest.decode(placed.encode().replace(good, bad))


def test_a_manifest_whose_pair_indices_are_not_its_registry_indices_is_refused() -> None:
    indexed = TaskManifest(WINDOW, "XX.C..HHZ", 0, ["XX.A..HHZ", "XX.B..HHZ"], [1, 2], [3, 3],
                           index={"XX.A..HHZ": 0, "XX.B..HHZ": 1, "XX.C..HHZ": 2})  # fmt: skip
    assert TaskManifest.decode(indexed.encode()) == indexed
    forged = [
        ({"pair_index": [1, 5]}, "not those of its registry"),
        ({"pair_index": [1, -2]}, "whole numbers >= 0"),
        ({"pair_index": [1, 2.0]}, "whole numbers >= 0"),
        ({"n_common": [3, "3"]}, "whole numbers"),
        ({"index": {**indexed.index, "XX.C..HHZ": 10**9}}, r"in \[0, 20000\)"),
        ({"index": {"XX.A..HHZ": 0, "XX.C..HHZ": 2}}, "incomplete or invalid"),
        ({"index": {**indexed.index, "XX.B..HHZ": 2}}, "incomplete or invalid"),  # the row's own index
    ]
    for change, reason in forged:
        with pytest.raises(ValueError, match=reason):
            TaskManifest.decode(dataclasses.replace(indexed, **change).encode())  # type: ignore[arg-type]


def test_a_manifest_encodes_every_field_as_asdict_would() -> None:
    full = TaskManifest(
        WINDOW, "XX.C..HHZ", 64, ["XX.A..HHZ", "XX.B..HHZ"], [1, 2], [3, 0],
        index={"XX.A..HHZ": 0, "XX.B..HHZ": 1, "XX.C..HHZ": 2}, skipped={"XX.B..HHZ": "no data"}, worker="w1",
        coordinates={"XX.A..HHZ": {"latitude": 1.0, "longitude": 2.0}},
    )  # fmt: skip
    assert json.loads(full.encode()) == dataclasses.asdict(full)
    assert TaskManifest.decode(full.encode()) == full
