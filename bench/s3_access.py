"""``python -m bench.s3_access``: how zarr should talk to S3, measured on the local S3 server.

The workload is the one the chunked result store will carry: whole chunks of a per-window CCF array, float32
``(B pairs, 8001 lags)`` with B = 16, 64 or 256 (0.5, 2 and 8 MB objects), uncompressed, written and read back
by one process with 1 or 4 threads. Each access path below PUTs ``--mb`` MB of such objects and GETs them back:

- raw clients: ``minio`` (our :class:`storage.S3Store`, which signs each body's SHA-256 over plain HTTP),
  ``minio-unsigned`` (the same store with ``UNSIGNED-PAYLOAD``), ``obstore`` (signed, its default),
  ``obstore-unsigned``, ``obstore-crc64`` (unsigned, with a CRC64NVME checksum the server verifies), ``s3fs``
  (botocore's defaults, a CRC32 checksum on every PUT) and ``s3fs-nocrc`` (checksums only when required);
- zarr 3.1 writing and reading whole chunks of a ``(n, 8001)`` float32 array with the ``bytes`` codec and no
  compressor: ``zarr-obstore`` (``zarr.storage.ObjectStore`` over unsigned obstore), ``zarr-fsspec``
  (``FsspecStore`` over s3fs) and ``zarr-adapter`` / ``zarr-adapter-unsigned`` (:class:`storage.zarrstore.
  ZarrObjectStore` over our S3Store, signed or unsigned). With 4 threads each thread writes its own chunks
  through zarr's synchronous API, as correlator threads would.

Every cell (path x size x threads x operation) reports throughput (MB/s, MB = 10^6 bytes) and CPU seconds per GB
(10^9 bytes) of this client process (every thread: ``time.process_time``) and of the S3 server
(``/proc/<pid>/task/*/schedstat`` of the stack's versitygw). Paths run interleaved, in a new random order for each
size and thread count of each round; the report gives medians over rounds. Writes
``bench/results/s3_access.{json,md}``. Needs the local stack (``xcorrflow stack up``); the objects go under
``bench-s3access/`` and are deleted after.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contracts.settings import Settings
from storage import S3Store
from storage._s3_wire import build_client
from xcorrflow.localstack.process import read_pid_file
from xcorrflow.localstack.service import StackPaths
from xcorrflow.orchestration.fleet import process_cpu_s

RESULTS = Path(__file__).parent / "results"
LAGS = 8001
SIZES = {"0.5MB": 16, "2MB": 64, "8MB": 256}  # rows B of one (B, 8001) float32 chunk
ROOT = "bench-s3access"
PATHS = (
    "minio",
    "minio-unsigned",
    "obstore",
    "obstore-unsigned",
    "obstore-crc64",
    "s3fs",
    "s3fs-nocrc",
    "zarr-obstore",
    "zarr-fsspec",
    "zarr-adapter",
    "zarr-adapter-unsigned",
)


class Cell(Protocol):
    """``count`` objects of one size under one access path: write object ``i``, read it back."""

    def put(self, i: int) -> None:
        """Write object ``i``."""

    def get(self, i: int) -> Any:
        """Read object ``i``; returns something with the buffer protocol."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the S3 server of the local stack."""

    address: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.address}"


# --- the access paths -----------------------------------------------------------------------------------------


class RawCell:
    """Objects ``<prefix>/o<i>`` written from prepared bytes through a put/get pair of functions."""

    def __init__(
        self, prefix: str, payloads: list[bytes], put: Callable[[str, bytes], object], get: Callable[[str], Any]
    ):
        self.prefix, self.payloads, self._put, self._get = prefix, payloads, put, get

    def put(self, i: int) -> None:
        self._put(f"{self.prefix}/o{i}", self.payloads[i % len(self.payloads)])

    def get(self, i: int) -> Any:
        return self._get(f"{self.prefix}/o{i}")


class ZarrCell:
    """Chunk ``i`` of a ``(count * B, 8001)`` float32 array, chunked by B rows, without compression."""

    def __init__(self, store: Any, rows: int, count: int, blocks: list[np.ndarray]):
        import zarr

        self.rows, self.blocks = rows, blocks
        self.array = zarr.create_array(
            store,
            shape=(rows * count, LAGS),
            chunks=(rows, LAGS),
            dtype="float32",
            compressors=None,
            filters=None,
            fill_value=0.0,
            config={"write_empty_chunks": True},  # no all-zero check per chunk; every chunk is an object
            overwrite=True,
        )

    def put(self, i: int) -> None:
        self.array[i * self.rows : (i + 1) * self.rows] = self.blocks[i % len(self.blocks)]

    def get(self, i: int) -> Any:
        return self.array[i * self.rows : (i + 1) * self.rows]


def s3store(ep: Endpoint, *, unsigned: bool) -> S3Store:
    """Our S3Store (minio client, 10 pooled connections), signed or with UNSIGNED-PAYLOAD."""
    client = build_client(ep.address, ep.access_key, ep.secret_key, region=ep.region, unsigned_payload=unsigned)
    return S3Store(client, ep.bucket, endpoint=ep.url, conditional_writes=True)


def obstore_store(ep: Endpoint, **options: Any) -> Any:
    """An ``obstore.store.S3Store`` on the bucket."""
    from obstore.store import S3Store as ObS3Store

    return ObS3Store(
        ep.bucket,
        endpoint=ep.url,
        access_key_id=ep.access_key,
        secret_access_key=ep.secret_key,
        region=ep.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        **options,
    )


def s3fs_options(ep: Endpoint, *, checksums: bool) -> dict[str, Any]:
    """``s3fs.S3FileSystem`` options; ``checksums=False`` asks botocore for checksums only where required."""
    config = {} if checksums else {"request_checksum_calculation": "when_required"}
    return {
        "key": ep.access_key,
        "secret": ep.secret_key,
        "endpoint_url": ep.url,
        "client_kwargs": {"region_name": ep.region},
        "config_kwargs": config,
        "skip_instance_cache": True,
    }


def make_cell(path: str, ep: Endpoint, rows: int, count: int, payloads: list[bytes], blocks: list[np.ndarray]) -> Cell:
    """The cell of ``path`` for objects of ``rows`` rows (its array or prefix is created here)."""
    prefix = f"{ROOT}/{path}/{rows}"
    if path.startswith("minio"):
        store = s3store(ep, unsigned=path == "minio-unsigned")
        return RawCell(prefix, payloads, store.put, store.get)
    if path.startswith("obstore"):
        import obstore as obs

        options = {"obstore": {}, "obstore-unsigned": {"unsigned_payload": True}}.get(
            path, {"unsigned_payload": True, "checksum_algorithm": "CRC64NVME"}
        )
        ob = obstore_store(ep, **options)
        return RawCell(prefix, payloads, lambda k, d: obs.put(ob, k, d), lambda k: obs.get(ob, k).bytes())
    if path.startswith("s3fs"):
        import s3fs

        fs = s3fs.S3FileSystem(**s3fs_options(ep, checksums=path == "s3fs"))
        return RawCell(f"{ep.bucket}/{prefix}", payloads, fs.pipe_file, fs.cat_file)
    return ZarrCell(zarr_store(path, ep, prefix), rows, count, blocks)


def zarr_store(path: str, ep: Endpoint, prefix: str) -> Any:
    """The zarr store of a ``zarr-*`` path, rooted at ``prefix``."""
    if path == "zarr-obstore":
        from zarr.storage import ObjectStore as ZarrObstore

        return ZarrObstore(obstore_store(ep, unsigned_payload=True, prefix=prefix))
    if path == "zarr-fsspec":
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(f"s3://{ep.bucket}/{prefix}", storage_options=s3fs_options(ep, checksums=True))
    if path in ("zarr-adapter", "zarr-adapter-unsigned"):
        from storage.zarrstore import ZarrObjectStore

        return ZarrObjectStore(s3store(ep, unsigned=path.endswith("unsigned")).scoped(prefix))
    raise ValueError(f"unknown access path {path!r}")


# --- measuring ------------------------------------------------------------------------------------------------


def server_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; ``stat``'s
    10 ms ticks are too coarse for a cell that costs the server a few hundredths of a second)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just exited
    return total / 1e9 if total else (process_cpu_s(pid) or 0.0)


def timed(
    pool: ThreadPoolExecutor, fn: Callable[[int], Any], count: int, server_pid: int
) -> tuple[dict[str, float], list[Any]]:
    """Run ``fn(0..count-1)`` on the pool; wall time and CPU seconds of this process and of the server."""
    server0, client0, t0 = server_cpu_s(server_pid), time.process_time(), time.perf_counter()
    out = list(pool.map(fn, range(count)))
    wall, client = time.perf_counter() - t0, time.process_time() - client0
    server = server_cpu_s(server_pid) - server0
    return {"wall_s": wall, "client_cpu_s": client, "server_cpu_s": server}, out


def check(got: list[Any], expected: Sequence[bytes], path: str) -> None:
    """Every object read back holds the bytes written (compared after the clock stopped)."""
    for i, data in enumerate(got):
        if bytes(memoryview(data).cast("B")) != expected[i % len(expected)]:
            raise AssertionError(f"{path}: object {i} read back differs from what was written")


def figures(times: dict[str, float], nbytes: int) -> dict[str, float]:
    """MB/s and CPU seconds per GB from one timed operation."""
    gb = nbytes / 1e9
    return {
        "mb_s": nbytes / 1e6 / times["wall_s"],
        "client_s_per_gb": times["client_cpu_s"] / gb,
        "server_s_per_gb": times["server_cpu_s"] / gb,
        "total_s_per_gb": (times["client_cpu_s"] + times["server_cpu_s"]) / gb,
        **times,
    }


def measure(cell: Cell, path: str, threads: int, count: int, payloads: list[bytes], pid: int) -> dict[str, Any]:
    """PUT then GET the cell's ``count`` objects with ``threads`` threads."""
    nbytes = count * len(payloads[0])
    with ThreadPoolExecutor(threads) as pool:
        put, _ = timed(pool, cell.put, count, pid)
        get, got = timed(pool, cell.get, count, pid)
    check(got, payloads, path)
    return {"put": figures(put, nbytes), "get": figures(get, nbytes)}


def stack_endpoint() -> tuple[Endpoint, int]:
    """The endpoint of the settings' S3 server and the pid of the stack's versitygw.

    Raises:
        SystemExit: the stack is not running (``xcorrflow stack up``).
    """
    settings = Settings()
    record = read_pid_file(StackPaths.from_settings(settings).pid_file("s3"))
    if record is None:
        raise SystemExit("no S3 server of the local stack: run `xcorrflow stack up` with the same XCORRFLOW_* env")
    ep = Endpoint(
        settings.s3_address,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
        settings.s3_bucket,
    )
    S3Store.from_settings(settings)  # creates the bucket if needed
    return ep, record.pid


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round of every cell; returns the raw results and their medians."""
    ep, pid = stack_endpoint()
    rng = np.random.default_rng(0)
    runs: list[dict[str, Any]] = []
    cells: dict[tuple[str, str], tuple[Cell, int, list[bytes]]] = {}
    for size in args.sizes:
        rows = SIZES[size]
        count = max(8, round(args.mb * 1e6 / (rows * LAGS * 4)))
        blocks = [rng.standard_normal((rows, LAGS)).astype(np.float32) for _ in range(4)]
        payloads = [block.tobytes() for block in blocks]
        for path in args.paths:
            cell = make_cell(path, ep, rows, count, payloads, blocks)
            measure(cell, path, 1, min(count, 4), payloads, pid)  # warm-up: connections, arrays, caches
            cells[path, size] = (cell, count, payloads)
    order = random.Random(1)
    for rnd in range(args.rounds):
        for size in args.sizes:
            for threads in args.threads:
                paths = list(args.paths)
                order.shuffle(paths)
                for path in paths:
                    cell, count, payloads = cells[path, size]
                    result = measure(cell, path, threads, count, payloads, pid)
                    runs.append(
                        {"round": rnd, "path": path, "size": size, "threads": threads, "count": count, **result}
                    )
                    print(_line(runs[-1]), flush=True)
    cleanup(ep)
    return {"runs": runs, "medians": medians(runs)}


def _line(run: dict[str, Any]) -> str:
    put, get = run["put"], run["get"]
    return (
        f"round {run['round']} {run['path']:<22} {run['size']:>5} x{run['threads']}: "
        f"PUT {put['mb_s']:7.1f} MB/s {put['client_s_per_gb']:5.2f}+{put['server_s_per_gb']:5.2f} s/GB   "
        f"GET {get['mb_s']:7.1f} MB/s {get['client_s_per_gb']:5.2f}+{get['server_s_per_gb']:5.2f} s/GB"
    )


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The median of every figure per (path, size, threads, operation)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["path"], run["size"], run["threads"]), []).append(run)
    rows = []
    for (path, size, threads), group in groups.items():
        row: dict[str, Any] = {"path": path, "size": size, "threads": threads, "rounds": len(group)}
        for op in ("put", "get"):
            row[op] = {name: statistics.median(r[op][name] for r in group) for name in group[0][op]}
        rows.append(row)
    return rows


def cleanup(ep: Endpoint) -> None:
    """Delete every object the benchmark wrote."""
    store = s3store(ep, unsigned=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(store.delete, [info.key for info in store.list(ROOT)]))


# --- reporting ------------------------------------------------------------------------------------------------


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    """Two tables (PUT, GET): per path and size, MB/s and client + server CPU s/GB at each thread count."""
    meds = {(m["path"], m["size"], m["threads"]): m for m in result["medians"]}
    lines = [
        f"S3 access paths on the local versitygw, {args.rounds} interleaved rounds, medians; {args.mb:g} MB per cell;"
        f" objects are (B, {LAGS}) float32 chunks; MB = 10^6 B, CPU in s per GB (10^9 B): client + server = total.",
        "",
    ]
    for op in ("put", "get"):
        header = "| path | size |" + "".join(f" {t} thr MB/s | {t} thr CPU s/GB c + s = total |" for t in args.threads)
        lines += [f"**{op.upper()}**", "", header, "|---|---|" + "---|---|" * len(args.threads)]
        for path in args.paths:
            for size in args.sizes:
                cells = []
                for t in args.threads:
                    f = meds[path, size, t][op]
                    cells.append(
                        f" {f['mb_s']:.0f} | {f['client_s_per_gb']:.2f} + {f['server_s_per_gb']:.2f} = "
                        f"**{f['total_s_per_gb']:.2f}** |"
                    )
                lines.append(f"| {path} | {size} |" + "".join(cells))
        lines.append("")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of the clients measured."""
    names = ("minio", "obstore", "s3fs", "aiobotocore", "botocore", "fsspec", "zarr", "numpy")
    found = {name: version(name) for name in names}
    return {"python": platform.python_version(), **found}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``bench/results/s3_access.{json,md}``."""
    parser = argparse.ArgumentParser(prog="python -m bench.s3_access", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--mb", type=float, default=128.0, help="MB written and read per cell (default 128)")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"object sizes (default {','.join(SIZES)})")
    parser.add_argument("--threads", default="1,4", help="thread counts (default 1,4)")
    parser.add_argument("--paths", default=",".join(PATHS), help="access paths (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.threads = [int(t) for t in args.threads.split(",")]
    args.paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in args.paths if p not in PATHS] + [s for s in args.sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown paths or sizes: {unknown}")
    started = time.time()
    result = run(args)
    result |= {"versions": versions(), "args": {k: v for k, v in vars(args).items() if k != "output"}}
    result["elapsed_s"] = time.time() - started
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "s3_access.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(result, args)
    (args.output / "s3_access.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
