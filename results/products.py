"""The station data of one namespace: raw station-windows, preprocessed products and task manifests.

A domain store above :class:`~storage.ObjectStore`, in the manner of NoisePy's ``CrossCorrelationDataStore``:
services ask it for "station S's product in window W" or "the manifests of window W", and it alone turns those
into keys (:class:`storage.layout.Layout`), content types and codecs. Writes are conditional puts, so nothing a
service writes twice (a redelivered event, a resumed run) can become two different objects. Keys still appear
where the event contract carries them (FileCommitted, PairTask); :meth:`ProductStore.listed` answers for those.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from dsp.product import StationProduct, decode_product, encode_product
from results.manifest import TaskManifest
from storage import ObjectInfo, ObjectStore, PutOutcome
from storage.errors import ObjectNotFound
from storage.keys import validate_key
from storage.layout import Layout

log = logging.getLogger(__name__)

MSEED = "application/vnd.fdsn.mseed"
PRODUCT = "application/octet-stream"
JSON = "application/json"


class ProductStore:
    """Raw station-windows, products and task manifests of the namespace ``layout`` describes."""

    def __init__(self, store: ObjectStore, namespace: str) -> None:
        self.store = store
        self.layout = Layout(namespace)

    # --- raw station-windows ------------------------------------------------------------------------------------
    def put_raw(self, window: str, station: str, data: bytes) -> PutOutcome:
        """Store a station-window's MiniSEED unless it is there already (see ``ObjectStore.put_if_absent``)."""
        return self.store.put_if_absent(self.layout.raw(window, station), data, content_type=MSEED)

    def raw_info(self, window: str, station: str) -> ObjectInfo:
        """What is stored of a station-window's raw data.

        Raises:
            ObjectNotFound: nothing is.
        """
        return self.store.stat(self.layout.raw(window, station))

    def get_raw(self, window: str, station: str) -> bytes:
        """A station-window's MiniSEED.

        Raises:
            ObjectNotFound, StorageUnavailable: the store could not deliver it.
        """
        return self.store.get(self.layout.raw(window, station))

    # --- products -------------------------------------------------------------------------------------------
    def put(self, product: StationProduct) -> PutOutcome:
        """Store a product unless one is there already (a conditional put never replaces another product).

        Raises:
            ObjectConflict: a different product is stored under its key.
        """
        key = self.layout.product(product.window, product.seed_id)
        return self.store.put_if_absent(key, encode_product(product), content_type=PRODUCT)

    def info(self, window: str, station: str) -> ObjectInfo:
        """What is stored of a station's product in a window (its size and etag are what FileCommitted says).

        Raises:
            ObjectNotFound: there is no product yet.
        """
        return self.store.stat(self.layout.product(window, station))

    def get(self, window: str, station: str) -> StationProduct:
        """A station's product in a window, decoded.

        Raises:
            ObjectNotFound, StorageUnavailable: the store could not deliver it. CorruptProduct: the bytes are not a
            product.
        """
        key = self.layout.product(window, station)
        return decode_product(self.store.get(key), key)

    def listed(self, key: str) -> bool:
        """Whether an object a commit event lists is in the store (a forged listing names objects that are not).

        Raises:
            InvalidKey: the key is malformed.
        """
        return self.store.exists(validate_key(key))

    # --- task manifests ---------------------------------------------------------------------------------------
    def put_manifest(self, manifest: TaskManifest) -> PutOutcome:
        """Store a task's manifest unless it is there already (a redelivered task keeps its first manifest)."""
        key = self.layout.manifest(manifest.window, manifest.row, manifest.slot)
        return self.store.put_if_absent(key, manifest.encode(), content_type=JSON)

    def manifest(self, window: str, row: str, slot: int) -> TaskManifest:
        """The manifest of the task of ``row`` at ``slot`` in ``window``.

        Raises:
            ObjectNotFound: the task has not finished. ValueError: the object is not a manifest.
        """
        return TaskManifest.decode(self.store.get(self.layout.manifest(window, row, slot)))

    def manifests(self, window: str) -> Iterator[TaskManifest]:
        """Every readable manifest of a window; one that vanished or does not decode is logged and skipped."""
        for info in self.store.list(self.layout.manifests(window)):
            try:
                yield TaskManifest.decode(self.store.get(info.key))
            except (ObjectNotFound, ValueError) as exc:
                log.warning("manifest %s unreadable (%s)", info.key, exc)
