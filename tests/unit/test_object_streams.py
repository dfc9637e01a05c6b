"""Large objects are copied by the store (multipart) and hashed as streams, never read whole.

The S3 server is the project's own (``python -m include.demo.services s3``) in a process of its
own, so the memory tracemalloc measures here is the worker's side only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest

from include.demo.readiness import wait_for_port
from include.demo.world import s3_client_for
from include.dsr.connectors import object_streams
from include.dsr.connectors.object_streams import copy_object, sha256_of
from tests.e2e.api_server import free_port

SIZE = 64 * 1024 * 1024
PART = 8 * 1024 * 1024
BUCKET = "fabconnect-platform-streams"


@pytest.fixture(scope="module")
def s3() -> Iterator:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "include.demo.services", "s3"],
        env={**os.environ, "DSR_S3_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        client = s3_client_for(f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def large_object(s3) -> str:
    """A 64 MiB specification file (pseudo-random, so nothing compresses it away); returns its SHA-256."""
    digest = hashlib.sha256()
    body = io.BytesIO()
    block = os.urandom(1024 * 1024)
    for i in range(SIZE // len(block)):
        chunk = bytes([i % 256]) + block[1:]
        digest.update(chunk)
        body.write(chunk)
    body.seek(0)
    s3.upload_fileobj(body, BUCKET, "specs/large.step")
    return digest.hexdigest()


def test_a_large_object_is_copied_in_parts_and_hashed_in_chunks(s3, large_object):
    tracemalloc.start()
    copy_object(s3, BUCKET, "specs/large.step", BUCKET, "_staging/R1/specs/large.step", part_bytes=PART)
    sha256, size = sha256_of(s3, BUCKET, "_staging/R1/specs/large.step")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (sha256, size) == (large_object, SIZE)
    etag = s3.head_object(Bucket=BUCKET, Key="_staging/R1/specs/large.step")["ETag"]
    assert etag.strip('"').endswith(f"-{SIZE // PART}"), "the copy was made in parts (UploadPartCopy)"
    assert peak < SIZE / 2, f"peak {peak / 2**20:.0f} MiB for a {SIZE / 2**20:.0f} MiB object"


def test_the_package_zip_streams_its_entries(s3, large_object, tmp_path):
    from include.dsr.package.build import _write_zip, _Writer

    writer = _Writer(s3, BUCKET, "R2/")
    tracemalloc.start()
    writer.copy("files/large.step", "specs/large.step")
    writer.put("manifest.json", b"{}", "application/json")
    key = _write_zip(writer, zipfile, None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert writer.files["files/large.step"]["sha256"] == large_object
    assert peak < SIZE / 2, (
        f"peak {peak / 2**20:.0f} MiB while copying, hashing and zipping a {SIZE / 2**20:.0f} MiB file"
    )
    s3.download_file(BUCKET, key, str(tmp_path / "package.zip"))
    with zipfile.ZipFile(tmp_path / "package.zip") as archive, archive.open("files/large.step") as entry:
        digest = hashlib.sha256()
        while chunk := entry.read(object_streams.CHUNK_BYTES):
            digest.update(chunk)
    assert digest.hexdigest() == large_object


def test_a_multipart_upload_copied_in_one_request_hashes_the_same(s3, large_object):
    copy_object(s3, BUCKET, "specs/large.step", BUCKET, "_staging/R3/large.step", part_bytes=2 * SIZE)
    assert "-" not in s3.head_object(Bucket=BUCKET, Key="_staging/R3/large.step")["ETag"]
    assert sha256_of(s3, BUCKET, "_staging/R3/large.step") == (large_object, SIZE)


def test_the_demo_s3_connection_checks_crcs_only_on_request():
    from include.demo.airflow_env import demo_connections

    extra = demo_connections()["fabconnect_s3"]["extra"]
    extra = json.loads(extra) if isinstance(extra, str) else extra
    assert extra["config_kwargs"] == {"response_checksum_validation": "when_required"}
