"""Importing the storage package costs no S3 client: minio loads with the first S3Store."""

from __future__ import annotations

import subprocess
import sys


def test_importing_storage_leaves_minio_unloaded() -> None:
    code = (
        "import sys, storage, storage.layout\n"
        "assert 'minio' not in sys.modules, 'storage imported minio eagerly'\n"
        "from storage import S3Store\n"
        "assert 'minio' in sys.modules and S3Store.__name__ == 'S3Store'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
