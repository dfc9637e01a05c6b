"""Large objects are copied by the store (multipart) and hashed as streams, never read whole.

The S3 server is the project's own (``python -m include.demo.services s3``) in a process of its
own, so the memory tracemalloc measures here is the worker's side only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from include.demo.readiness import wait_for_port
from include.demo.world import s3_client_for
from include.dsr.connectors import object_streams
from include.dsr.connectors.object_streams import ObjectUpload, copy_and_hash, copy_object, sha256_of
from tests.e2e.api_server import free_port
from tests.support import botocore_hook

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
    """A large staged file goes into the package's zip chunk by chunk, and the zip goes up in parts."""
    from include.dsr.package.build import _ZipWriter

    tracemalloc.start()
    with ObjectUpload(s3, BUCKET, "R2/package.zip") as upload, zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as z:
        writer = _ZipWriter(z)
        writer.copy("files/large.step", s3, BUCKET, "specs/large.step")
        writer.put("manifest.json", b"{}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert writer.files["files/large.step"] == {"path": "files/large.step", "sha256": large_object, "size_bytes": SIZE}
    assert peak < SIZE / 2, (
        f"peak {peak / 2**20:.0f} MiB while copying, hashing and zipping a {SIZE / 2**20:.0f} MiB file"
    )
    head = s3.head_object(Bucket=BUCKET, Key="R2/package.zip")
    assert head["ETag"].strip('"').endswith(f"-{-(-upload.size // PART)}"), "uploaded in parts as they filled"
    s3.download_file(BUCKET, "R2/package.zip", str(tmp_path / "package.zip"))
    assert hashlib.sha256((tmp_path / "package.zip").read_bytes()).hexdigest() == upload.sha256
    with zipfile.ZipFile(tmp_path / "package.zip") as archive, archive.open("files/large.step") as entry:
        digest = hashlib.sha256()
        while chunk := entry.read(object_streams.CHUNK_BYTES):
            digest.update(chunk)
    assert digest.hexdigest() == large_object


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        pytest.param(0, 0, id="empty: one PutObject"),
        pytest.param(PART - 1, 0, id="under a part: one PutObject"),
        pytest.param(PART, 1, id="exactly a part"),
        pytest.param(2 * PART + 7, 3, id="two parts and a tail"),
    ],
)
def test_an_object_upload_is_one_put_when_small_and_parts_when_large(s3, calls, size, parts):
    body = os.urandom(size)
    with ObjectUpload(s3, BUCKET, f"uploads/{size}.bin", ContentType="application/zip") as upload:
        for i in range(0, size, 1_000_003):  # writes of an odd size: parts are cut from the buffer
            upload.write(body[i : i + 1_000_003])
    stored = s3.get_object(Bucket=BUCKET, Key=f"uploads/{size}.bin")
    assert stored["Body"].read() == body
    assert stored["ContentType"] == "application/zip"
    assert (upload.sha256, upload.size) == (hashlib.sha256(body).hexdigest(), size)
    assert calls.count("UploadPart") == parts
    assert calls.count("PutObject") == (0 if parts else 1)


def test_a_failed_object_upload_leaves_no_object_and_no_parts(s3):
    def write_then_fail() -> None:
        with ObjectUpload(s3, BUCKET, "uploads/broken.zip") as upload:
            upload.write(os.urandom(PART + 1))  # one part sent
            raise RuntimeError("zip failed")

    with pytest.raises(RuntimeError, match="zip failed"):
        write_then_fail()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="uploads/broken.zip")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_a_multipart_upload_copied_in_one_request_hashes_the_same(s3, large_object):
    copy_object(s3, BUCKET, "specs/large.step", BUCKET, "_staging/R3/large.step", part_bytes=2 * SIZE)
    assert "-" not in s3.head_object(Bucket=BUCKET, Key="_staging/R3/large.step")["ETag"]
    assert sha256_of(s3, BUCKET, "_staging/R3/large.step") == (large_object, SIZE)


@pytest.fixture
def calls(s3) -> Iterator[list[str]]:
    """The S3 operations the client sends while the test runs."""
    seen: list[str] = []
    with botocore_hook(s3, "before-call.s3", lambda model, **_: seen.append(model.name)):
        yield seen


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"x", id="one-byte"),
        pytest.param("ÅØ 设计图 \u200b\r\n".encode() * 999, id="multi-script"),
        pytest.param(os.urandom(300_000), id="300kB-random"),
    ],
)
def test_a_small_object_is_hashed_by_the_store_not_read_back(s3, calls, body):
    s3.put_object(Bucket=BUCKET, Key="specs/small.step", Body=body)
    assert copy_and_hash(s3, BUCKET, "specs/small.step", BUCKET, "_staging/R4/small.step") == (
        hashlib.sha256(body).hexdigest(),
        len(body),
    )
    assert calls[1:] == ["HeadObject", "CopyObject"], "no GetObject: the store hashed the copy"
    assert s3.get_object(Bucket=BUCKET, Key="_staging/R4/small.step")["Body"].read() == body


def test_a_store_without_checksums_gets_the_copy_read_back(s3, calls):
    """An S3-compatible store that ignores ChecksumAlgorithm: the copy is hashed as a stream."""

    def drop_checksum(parsed, **_):
        parsed.get("CopyObjectResult", {}).pop("ChecksumSHA256", None)

    s3.put_object(Bucket=BUCKET, Key="specs/plain.step", Body=b"solid 1\n")
    with botocore_hook(s3, "after-call.s3.CopyObject", drop_checksum):
        result = copy_and_hash(s3, BUCKET, "specs/plain.step", BUCKET, "_staging/R5/plain.step")
    assert result == (hashlib.sha256(b"solid 1\n").hexdigest(), 8)
    assert calls[-3:] == ["HeadObject", "CopyObject", "GetObject"]


def test_a_source_replaced_between_size_and_copy_is_hashed_as_copied(s3, calls):
    """The size is read before the copy; a copy of other bytes must not carry that size."""
    s3.put_object(Bucket=BUCKET, Key="specs/moving.step", Body=b"first version")

    def replace_source(**_):
        s3.meta.events.unregister("before-call.s3.CopyObject", replace_source)
        s3.put_object(Bucket=BUCKET, Key="specs/moving.step", Body=b"a longer second version")

    s3.meta.events.register("before-call.s3.CopyObject", replace_source)
    assert copy_and_hash(s3, BUCKET, "specs/moving.step", BUCKET, "_staging/R6/moving.step") == (
        hashlib.sha256(b"a longer second version").hexdigest(),
        23,
    )
    assert calls[-1] == "GetObject", "the copy was read back"


@pytest.mark.parametrize(
    "garbled",
    [
        pytest.param(lambda digest: digest.hex(), id="hex-not-base64"),
        pytest.param(lambda digest: base64.b64encode(digest).decode() + "-3", id="composite-of-parts"),
        pytest.param(lambda digest: base64.b64encode(digest[:20]).decode(), id="sha1-length"),
        pytest.param(lambda digest: "not base64 at all!", id="malformed"),
    ],
)
def test_a_checksum_that_is_not_a_whole_object_sha256_is_not_trusted(s3, calls, garbled):
    body = b"ISO-10303-21;\n" * 100
    s3.put_object(Bucket=BUCKET, Key="specs/garbled.step", Body=body)

    def garble(parsed, **_):
        result = parsed.get("CopyObjectResult", {})
        result["ChecksumSHA256"] = garbled(hashlib.sha256(b"other bytes").digest())

    with botocore_hook(s3, "after-call.s3.CopyObject", garble):
        result = copy_and_hash(s3, BUCKET, "specs/garbled.step", BUCKET, "_staging/R8/garbled.step")
    assert result == (hashlib.sha256(body).hexdigest(), len(body))
    assert calls[-1] == "GetObject"


def test_a_store_that_refuses_the_checksum_header_gets_a_plain_copy_read_back():
    """Some S3-compatible stores answer 400 InvalidArgument to x-amz-checksum-algorithm."""
    from botocore.exceptions import ClientError

    body = b"solid 2\n"
    stored: dict[str, bytes] = {"specs/a.step": body}
    asked: list[str] = []

    class Store:
        def head_object(self, Bucket, Key):
            asked.append("HeadObject")
            return {"ContentLength": len(stored[Key]), "ETag": '"e1"'}

        def copy_object(self, Bucket, Key, CopySource, **extra):
            asked.append("CopyObject" + ("+checksum" if extra else ""))
            if extra:
                raise ClientError({"Error": {"Code": "InvalidArgument", "Message": "checksum"}}, "CopyObject")
            stored[Key] = stored[CopySource["Key"]]
            return {"CopyObjectResult": {"ETag": '"e1"'}}

        def get_object(self, Bucket, Key):
            asked.append("GetObject")
            return {"Body": SimpleNamespace(iter_chunks=lambda size: iter([stored[Key]]))}

    assert copy_and_hash(Store(), BUCKET, "specs/a.step", BUCKET, "R9/a.step") == (hashlib.sha256(body).hexdigest(), 8)
    assert asked == ["HeadObject", "CopyObject+checksum", "CopyObject", "GetObject"]
    assert stored["R9/a.step"] == body


def test_other_copy_errors_are_raised(s3):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="Not Found|NoSuchKey|404"):
        copy_and_hash(s3, BUCKET, "specs/no-such.step", BUCKET, "_staging/R10/no-such.step")


def test_a_large_object_is_copied_in_parts_then_hashed_as_a_stream(s3, large_object, calls):
    assert copy_and_hash(s3, BUCKET, "specs/large.step", BUCKET, "_staging/R7/large.step", part_bytes=PART) == (
        large_object,
        SIZE,
    )
    assert "UploadPartCopy" in calls
    assert calls[-1] == "GetObject"


def test_the_demo_s3_connection_checks_crcs_only_on_request():
    from include.demo.airflow_env import demo_connections

    extra = demo_connections()["fabconnect_s3"]["extra"]
    extra = json.loads(extra) if isinstance(extra, str) else extra
    assert extra["config_kwargs"] == {"response_checksum_validation": "when_required"}


class _FailingAt:
    """A client that raises at one S3 operation and passes everything else to the real one."""

    def __init__(self, s3, operation: str) -> None:
        self._s3, self._operation = s3, operation

    def __getattr__(self, name):
        if name == self._operation:

            def fail(**_):
                raise OSError(f"store unreachable at {name}")

            return fail
        return getattr(self._s3, name)


@pytest.mark.parametrize("failing", ["complete_multipart_upload", "upload_part"])
def test_a_close_that_fails_half_way_aborts_the_upload(s3, failing):
    key = f"uploads/close-fails-{failing}.zip"
    upload = ObjectUpload(_FailingAt(s3, failing) if failing == "complete_multipart_upload" else s3, BUCKET, key)
    upload.write(os.urandom(PART + 5))  # one part sent, the tail still buffered
    if failing == "upload_part":
        upload.s3 = _FailingAt(s3, failing)  # the tail's part fails
    with pytest.raises(OSError, match="store unreachable"):
        upload.close()
    assert upload.aborted
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key)
    assert not [u for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) if u["Key"] == key]


def test_a_failing_package_entry_sends_nothing_more_and_leaves_nothing(s3):
    """The zip is never closed into an aborted upload: no part, no object after the error."""
    key = "uploads/entry-fails.zip"
    sent: list[str] = []
    with botocore_hook(s3, "before-call.s3", lambda model, **_: sent.append(model.name)):

        def build() -> None:
            with ObjectUpload(s3, BUCKET, key) as upload:
                archive = zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED)
                with archive.open("files/big.bin", "w") as entry:
                    entry.write(os.urandom(PART + 1))  # the first part goes out
                raise RuntimeError("a staged file is gone")

        with pytest.raises(RuntimeError, match="staged file is gone"):
            build()
        sent_before_gc = list(sent)
        import gc

        gc.collect()  # the unclosed ZipFile's __del__ writes into the aborted upload: dropped
    assert sent_before_gc[-1] == "AbortMultipartUpload"
    assert sent == sent_before_gc
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key)
