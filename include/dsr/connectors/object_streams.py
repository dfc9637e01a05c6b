"""Large objects as streams: a specification file of hundreds of megabytes is copied by the
store itself (multipart ``UploadPartCopy`` above ``MULTIPART_BYTES``) and hashed chunk by chunk,
so a worker holds one chunk of it at a time, never the file.

An object up to ``MULTIPART_BYTES`` is copied in one ``CopyObject`` that asks the store for the
copy's SHA-256 (``ChecksumAlgorithm``), so nothing is read back unless the store's answer leaves
a doubt (see :func:`copy_and_hash`). An object written from a stream (a package's zip) goes up
through :class:`ObjectUpload`: one ``PutObject`` when small, parts as they fill when large.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import IO, Any

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 * 1024 * 1024
#: Reads streamed into another writer (a zip entry) come in pieces of this size: the writer's
#: own buffers (compression, the upload's part) then hold the memory, not the read.
STREAM_READ_BYTES = 1024 * 1024
#: Objects above this are copied in parts of this size (S3's parts are 5 MiB to 5 GiB).
MULTIPART_BYTES = 64 * 1024 * 1024


def _transfer_config(part_bytes: int):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes, max_concurrency=4)


def copy_object(
    s3: Any, source_bucket: str, source_key: str, bucket: str, key: str, part_bytes: int = MULTIPART_BYTES
) -> None:
    """Server-side copy; multipart above ``part_bytes`` (CopyObject alone stops at 5 GiB)."""
    s3.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key, Config=_transfer_config(part_bytes))


def copy_and_hash(
    s3: Any, source_bucket: str, source_key: str, bucket: str, key: str, part_bytes: int = MULTIPART_BYTES
) -> tuple[str, int]:
    """Copy an object and return the SHA-256 (hex) and size of the copy as stored.

    Small objects: one ``CopyObject`` with ``ChecksumAlgorithm=SHA256`` (the store hashes the copy;
    a whole-object checksum, as the copy is not multipart). The size is the source's, read just
    before the copy; the copy's ETag must equal the one read with it. Otherwise the copy is read
    back and hashed: a source replaced in between, a store that ignores, refuses or garbles the
    checksum, an encrypted or multipart-uploaded source whose copy gets a new ETag. Large
    objects: a multipart copy, then a streamed read.
    """
    head = s3.head_object(Bucket=source_bucket, Key=source_key)
    size = int(head["ContentLength"])
    if size > part_bytes:
        copy_object(s3, source_bucket, source_key, bucket, key, part_bytes)
        return sha256_of(s3, bucket, key)
    copied = _copy_with_checksum(s3, source_bucket, source_key, bucket, key)
    checksum = _sha256_hex(copied.get("ChecksumSHA256"))
    if checksum is None or copied.get("ETag", "").strip('"') != head["ETag"].strip('"'):
        return sha256_of(s3, bucket, key)
    return checksum, size


def _copy_with_checksum(s3: Any, source_bucket: str, source_key: str, bucket: str, key: str) -> dict:
    """One ``CopyObject`` asking the store for the copy's SHA-256; its ``CopyObjectResult``. A store
    that refuses the checksum header gets a plain copy and an empty result (so the caller reads
    the copy back)."""
    from botocore.exceptions import ClientError

    source = {"Bucket": source_bucket, "Key": source_key}
    try:
        answer = s3.copy_object(Bucket=bucket, Key=key, CopySource=source, ChecksumAlgorithm="SHA256")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("InvalidArgument", "InvalidRequest", "NotImplemented"):
            raise
        s3.copy_object(Bucket=bucket, Key=key, CopySource=source)
        return {}
    return answer.get("CopyObjectResult", {})


def _sha256_hex(checksum: str | None) -> str | None:
    """A full-object SHA-256 as S3 returns it (base64 of 32 bytes) in hex; None for anything else
    (absent, hex, composite ``...-N``, malformed)."""
    if not checksum:
        return None
    try:
        digest = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return digest.hex() if len(digest) == 32 else None


def sha256_of(s3: Any, bucket: str, key: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of an object, read in ``CHUNK_BYTES`` chunks."""
    digest, size = hashlib.sha256(), 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def stream_into(s3: Any, bucket: str, key: str, sink: IO[bytes]) -> tuple[str, int]:
    """Write an object's bytes into ``sink`` chunk by chunk; the SHA-256 (hex) and size of what was written."""
    digest, written = hashlib.sha256(), 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(STREAM_READ_BYTES):
        sink.write(chunk)
        digest.update(chunk)
        written += len(chunk)
    return digest.hexdigest(), written


class ObjectUpload:
    """A write-only file object whose bytes become one object: a single ``PutObject`` when they
    fit in one ``part_bytes`` buffer, else a multipart upload in parts of that size, sent as they
    fill. Memory: one part, whatever the object's size. Not seekable, so ``zipfile`` writes into
    it with data descriptors.

    ``close()`` finishes the upload; leaving a ``with`` block on an exception, or a close that
    fails half-way, aborts it (no object, no orphaned parts). After an abort, writes are dropped
    (a zip closed after its upload was aborted sends nothing). ``sha256`` and ``size`` describe
    the bytes uploaded.
    """

    def __init__(self, s3: Any, bucket: str, key: str, part_bytes: int = CHUNK_BYTES, **put_args: Any) -> None:
        self.s3, self.bucket, self.key, self.part_bytes, self.put_args = s3, bucket, key, part_bytes, put_args
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self.size = 0
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> int:
        if self.aborted:
            return len(data)
        if self.closed:
            raise ValueError(f"upload of {self.key} is closed")
        self._digest.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            room = self.part_bytes - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == self.part_bytes:  # a full part goes as it is; a new buffer takes the rest
                part, self._buffer = self._buffer, bytearray()
                self._send_part(part)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _send_part(self, body: bytes | bytearray) -> None:
        if self._upload_id is None:
            started = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key, **self.put_args)
            self._upload_id = started["UploadId"]
        number = len(self._parts) + 1
        sent = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def close(self) -> None:
        if self.closed:
            return
        if self._upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._buffer, **self.put_args)
        else:
            try:
                if self._buffer:
                    self._send_part(self._buffer)
                self.s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
                )
            except BaseException:
                self.abort()
                raise
        self.closed = True
        self._buffer = bytearray()

    def abort(self) -> None:
        """Drop what was written: parts already sent are deleted, nothing is stored. A store that
        cannot be told is logged, not raised (the error that led here is the one to see)."""
        if self.aborted or self.closed:
            return
        self.aborted = self.closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except Exception as exc:  # the parts expire with the bucket's lifecycle rule, if any
                log.warning("upload of %s: abort failed (%s); its parts may be left", self.key, type(exc).__name__)

    def __enter__(self) -> ObjectUpload:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
