"""Large objects as streams: a specification file of hundreds of megabytes is copied by the
store itself (multipart ``UploadPartCopy`` above ``MULTIPART_BYTES``) and hashed chunk by chunk,
so a worker holds one chunk of it at a time, never the file.

An object up to ``MULTIPART_BYTES`` is copied in one ``CopyObject`` that asks the store for the
copy's SHA-256 (``ChecksumAlgorithm``), so nothing is read back unless the store's answer leaves
a doubt (see :func:`copy_and_hash`).
"""

from __future__ import annotations

import base64
import hashlib
from typing import IO, Any

CHUNK_BYTES = 8 * 1024 * 1024
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


def stream_into(s3: Any, bucket: str, key: str, sink: IO[bytes]) -> int:
    """Write an object's bytes into ``sink`` chunk by chunk; returns the bytes written."""
    written = 0
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK_BYTES):
        sink.write(chunk)
        written += len(chunk)
    return written


def upload_file(s3: Any, path: str, bucket: str, key: str, content_type: str) -> None:
    """Upload a local file in ``CHUNK_BYTES`` parts. By file name, not file object: boto3 reads
    the parts of a named file lazily, while it reads every part of a file object into memory
    before sending (a 1 GiB zip would be 1 GiB of worker memory)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=CHUNK_BYTES, multipart_chunksize=CHUNK_BYTES, max_concurrency=2)
    s3.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type}, Config=config)
