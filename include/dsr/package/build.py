"""Build the access / portability package of a request from its staging area.

Layout under ``s3://<exports bucket>/<request_id>/``::

    package.zip      what the subject's link opens (AES-encrypted outside the demo), holding:
        data.json                       {system: {collection: [records]}}
        csv/<system>/<collection>.csv   one per collection that holds records (header row first)
        files/<object key>              copies of the subject's objects (CAD files, ...)
        report.html                     access only: the Art. 15 report (one self-contained file)
        schema.json                     portability only: JSON Schema (2020-12) of data.json
        manifest.json                   counts, status per system, sha256 + size of every other file
    manifest.json    the same manifest beside the zip, for ops and tools (counts, paths and
                     checksums: no record values)

The subject gets one link, so everything the report points to (data.json, the CSVs, the files)
travels in the one object it opens. Outside the zip the bucket holds no copy of the subject's
data, and a package costs the store two writes plus one read per copied file, however many
collections it holds.

Portability keeps only collections whose data-map ``portability`` is ``provided`` or
``observed`` (Art. 20: inferred data is out). Building is idempotent: the same keys are
overwritten and keys an earlier build left under the prefix that this build did not write are
deleted (packages of the former layout, one object per file, included). The staging area is left
alone: the caller clears it once the package is recorded.

A collection with no records of the subject has no CSV: ``data.json`` lists it as ``[]`` and the
manifest counts it as 0, so nothing is hidden, and the subject is not handed a folder of empty
files (Art. 12(1): concise, intelligible).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.constants import MAX_PRESIGN_SECONDS
from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.connectors.object_streams import ObjectUpload, stream_into
from include.dsr.connectors.staging import Staging
from include.dsr.core.errors import CheckFailedError, TerminalError
from include.dsr.core.request import REQUEST_ID_PATTERN
from include.dsr.package.report import render_access_report, schema_document

if TYPE_CHECKING:
    import pandas as pd

    from include.dsr.core.data_map import DataMap

log = logging.getLogger(__name__)

RIGHTS = ("access", "portability")
PORTABLE = ("provided", "observed")
MANIFEST, ZIP_NAME = "manifest.json", "package.zip"
JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class PackageResult:
    """What was written. ``url`` is a bearer link to personal data: store it, never log it."""

    prefix: str
    keys: list[str]  # the manifest and the zip
    manifest_key: str
    url: str = field(repr=False)
    expires_at: datetime
    counts: dict[str, int]  # records per system (the ledger's per-system count)
    zip_key: str
    manifest_sha256: str = ""  # evidence: identifies this exact package
    collection_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    files: int = 0  # files in the zip, the manifest included
    zip_sha256: str = ""
    zip_size_bytes: int = 0
    # portability: {"schema", "data", "manifest"} as written, for a direct transmission
    portable: dict | None = field(default=None, repr=False)

    def transmit_body(self) -> dict:
        """``{"schema", "data", "manifest"}`` of a portability package, for :func:`transmit_package`."""
        if self.portable is None:
            raise TerminalError(
                f"{self.prefix}schema.json is missing: only a portability package can be transmitted; "
                "build it with right='portability'"
            )
        return self.portable


@dataclass
class _Gathered:
    frames: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # system -> collection -> rows
    objects: dict[str, str] = field(default_factory=dict)  # package path -> staged key
    units: dict[str, dict[str, str]] = field(default_factory=dict)  # system -> unit -> status


class _ZipWriter:
    """Writes the files of a package into its zip and records sha256 and size of each (the manifest's list)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.files: dict[str, dict] = {}  # path inside the package -> manifest entry

    def put(self, path: str, body: bytes) -> None:
        with self.archive.open(path, "w", force_zip64=True) as entry:
            entry.write(body)
        self.files[path] = {"path": path, "sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body)}

    def copy(self, path: str, s3: Any, bucket: str, source_key: str) -> None:
        """A staged object streamed into the zip chunk by chunk, hashed as it goes: the manifest
        vouches for the bytes the subject gets, and a large file never sits in memory."""
        with self.archive.open(path, "w", force_zip64=True) as entry:
            sha256, size = stream_into(s3, bucket, source_key, entry)
        self.files[path] = {"path": path, "sha256": sha256, "size_bytes": size}


def build_package(
    s3: Any,
    bucket: str,
    request_id: str,
    right: str,
    data_map: DataMap,
    request_info: dict,
    link_seconds: int,
    zip_password: str | None = None,
    staging: Any | None = None,
    earlier_keys: set[str] | None = None,
) -> PackageResult:
    """Build the package of ``request_id`` from its staging area in ``bucket``.

    :param s3: boto3 S3 client
    :param bucket: exports bucket holding both ``_staging/<request_id>/`` and the package
    :param right: ``access`` or ``portability``
    :param data_map: the loaded data map (descriptions, purposes, portability scope)
    :param request_info: non-personal facts (``request_id``, ``received_at``, ``due_at``,
        ``jurisdiction``; ``generated_at`` defaults to now, UTC)
    :param link_seconds: lifetime of the presigned link; clamped to
        ``constants.MAX_PRESIGN_SECONDS`` (7 days, the SigV4 maximum). A link signed with
        temporary credentials also dies when those credentials expire.
    :param zip_password: encrypt ``package.zip`` with AES-256 under this password (needs
        ``pyzipper``); without one the zip is plain (the demo)
    :param staging: where the request's rows are read: default its own staging area; a wave passes
        the request's slice of the wave's (:class:`~include.dsr.connectors.staging.RequestSlice`)
    :param earlier_keys: the keys already under ``<request_id>/`` when the caller listed them
        (a wave, see :func:`requests_with_keys`); default: listed here
    :returns: the keys written and a presigned GET link to the zip
    :raises TerminalError: unknown right, bad request id or link lifetime, nothing staged,
        a staged system/collection missing from the data map, ``pyzipper`` missing for a password
    :raises CheckFailedError: a staged row belongs to another request
    """
    if right not in RIGHTS:
        raise TerminalError(f"right {right!r} has no package; use one of {RIGHTS}")
    if not isinstance(request_id, str) or not re.match(REQUEST_ID_PATTERN, request_id):
        raise TerminalError("request_id must be 3-64 characters of letters, digits, '.', '_' or '-'")
    if link_seconds <= 0:
        raise TerminalError(f"link_seconds must be positive, got {link_seconds}")
    zip_module = _zip_module(zip_password)
    seconds = min(int(link_seconds), MAX_PRESIGN_SECONDS)
    if seconds < link_seconds:
        log.warning("request %s: link lifetime %ss clamped to %ss", request_id, link_seconds, seconds)
    generated_at = request_info.get("generated_at") or datetime.now(UTC).isoformat(timespec="seconds")
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    info = {**request_info, "request_id": request_id, "generated_at": generated_at}

    gathered = _gather(staging or Staging(s3, bucket, request_id), data_map, right)
    prefix = f"{request_id}/"
    zip_key, manifest_key = prefix + ZIP_NAME, prefix + MANIFEST
    # Listed before writing: a first build lists an empty prefix, which costs the store next to nothing.
    earlier = _keys_under(s3, bucket, prefix) if earlier_keys is None else set(earlier_keys)
    data = {
        system: {name: _records(frame) for name, frame in colls.items()} for system, colls in gathered.frames.items()
    }
    counts = {system: {name: len(frame) for name, frame in colls.items()} for system, colls in gathered.frames.items()}
    upload = ObjectUpload(
        s3,
        bucket,
        zip_key,
        ContentType="application/zip",
        ContentDisposition=f'attachment; filename="{request_id}.zip"',
    )
    # On an error the upload is aborted before anything closes the zip: its central directory is
    # then dropped, not sent (with upload, archive: the archive's exit would write it first).
    with upload:
        archive = _open_zip(zip_module, upload, zip_password)
        writer = _ZipWriter(archive)
        writer.put("data.json", _json(data, indent=None))
        for system, colls in gathered.frames.items():
            for name, frame in colls.items():
                if len(frame):
                    writer.put(f"csv/{system}/{name}.csv", _csv(list(frame.columns), data[system][name]))
        for path, staged_key in sorted(gathered.objects.items()):
            writer.copy(path, s3, bucket, staged_key)
        schema = None
        if right == "portability":
            schema = schema_document(data_map, gathered.frames, data)
            writer.put("schema.json", _json(schema))
        else:
            writer.put("report.html", render_access_report(data_map, data, gathered.frames, info).encode("utf-8"))
        manifest = {
            "request_id": request_id,
            "right": right,
            "generated_at": generated_at,
            "systems": {
                system: {"collections": counts.get(system, {}), "status": _status(units), "units": units}
                for system, units in gathered.units.items()
            },
            "files": sorted(writer.files.values(), key=lambda f: f["path"]),
            "record_count_total": sum(n for colls in counts.values() for n in colls.values()),
            "link_expires_at": expires_at.isoformat(),
        }
        manifest_body = _json(manifest)
        writer.put(MANIFEST, manifest_body)
        archive.close()  # its central directory, then the upload completes
    # After the zip, so a manifest beside it always describes a complete package.
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=manifest_body, ContentType=JSON_TYPE)

    keys = sorted([manifest_key, zip_key])
    stale = _delete_stale(s3, bucket, earlier - set(keys))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": zip_key}, ExpiresIn=seconds)
    log.info(
        "request %s: %s package with %s files, %s records, %s stale keys deleted",
        request_id,
        right,
        len(writer.files),
        manifest["record_count_total"],
        stale,
    )
    return PackageResult(
        prefix,
        keys,
        manifest_key,
        url,
        expires_at,
        {system: sum(colls.values()) for system, colls in counts.items()},
        zip_key,
        hashlib.sha256(manifest_body).hexdigest(),
        counts,
        files=len(writer.files),
        zip_sha256=upload.sha256,
        zip_size_bytes=upload.size,
        portable={"schema": schema, "data": data, "manifest": manifest} if schema is not None else None,
    )


def _gather(staging: Staging, data_map: DataMap, right: str) -> _Gathered:
    """Load every staged unit, merge units per system, keep what ``right`` allows, in data-map order."""
    gathered, order = _Gathered(), {s.key: i for i, s in enumerate(data_map.systems)}
    units = staging.systems()
    if not units:  # "found nothing" is zero-row frames; no units means no gather (or a cleared staging)
        raise TerminalError(
            f"request {staging.request_id}: nothing is staged; run the gather tasks first "
            "(an existing package is left as it is)"
        )
    for unit in units:
        meta = staging.meta(unit)
        system_key = str(meta.get("system") or unit).partition(".")[0]
        if system_key not in order:
            raise TerminalError(
                f"staged unit {unit!r} names system {system_key!r}, which the data map does "
                "not declare; add it to the data map or remove the staged unit"
            )
        system, result = data_map.systems[order[system_key]], staging.load(unit)
        kept = {}
        for name, frame in result.frames.items():
            if name not in {c.name for c in system.collections}:
                raise TerminalError(f"staged collection {system_key}.{name} is not in the data map; declare it")
            if right == "access" or system.collection(name).portability in PORTABLE:
                kept[name] = _clean(frame, staging, f"{unit}/{name}", gathered.objects, result.files.get(name, []))
        if result.frames and not kept:
            continue  # portability: nothing of this unit may leave
        gathered.units.setdefault(system_key, {})[unit] = str(meta.get("status", "completed"))
        gathered.frames.setdefault(system_key, {}).update(kept)
    gathered.frames = {s: _ordered(data_map, s, gathered.frames[s]) for s in sorted(gathered.frames, key=order.get)}
    gathered.units = {s: gathered.units[s] for s in gathered.frames}
    return gathered


def _clean(
    frame: pd.DataFrame, staging: Staging, where: str, objects: dict[str, str], staged_files: list[str]
) -> pd.DataFrame:
    """Refuse other requests' rows, drop helper columns, point object rows at ``files/<key>``."""
    if REQUEST_ID_COLUMN in frame.columns:
        foreign = int((frame[REQUEST_ID_COLUMN].astype(str) != staging.request_id).sum())
        if foreign:
            raise CheckFailedError(
                f"request {staging.request_id}: {foreign} staged rows of {where} belong to "
                "another request; a package holds only the subject's rows"
            )
        frame = frame.drop(columns=[REQUEST_ID_COLUMN])
    if {"object_key", "staged_key"} <= set(frame.columns):
        paths = [f"files/{_safe_path(key)}" for key in frame["object_key"].astype(str)]
        objects.update(zip(paths, frame["staged_key"].astype(str), strict=True))
        frame = frame.drop(columns=["staged_key"]).assign(package_file=paths)
    else:  # no per-row keys: fall back to the unit's list of staged files
        for staged_key in staged_files:
            objects[f"files/{_safe_path(staged_key.removeprefix(staging.files_prefix))}"] = staged_key
    import pandas as pd

    # a wave's slices come with a fresh index already; only a request's own staging needs one
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1:
        return frame
    return frame.reset_index(drop=True)


def _safe_path(object_key: str) -> str:
    """An object key as a relative path no unzip tool can turn into ``../`` or ``/``."""
    path = "/".join(p for p in object_key.replace("\\", "/").split("/") if p not in ("", ".", ".."))
    if not path:
        raise TerminalError("a staged object has an empty key; re-run the object-store gather")
    return path


def _ordered(data_map: DataMap, system_key: str, frames: dict) -> dict:
    names = [c.name for c in data_map.system(system_key).collections]
    return {name: frames[name] for name in sorted(frames, key=names.index)}


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON values: NaN -> null, numpy scalars -> numbers, strings (ISO dates too) as they are."""
    return json.loads(frame.to_json(orient="records", date_format="iso", force_ascii=False, double_precision=15))


def _status(units: dict[str, str]) -> str:
    statuses = set(units.values())
    return statuses.pop() if len(statuses) == 1 else "partial"


def _json(payload: Any, indent: int | None = 2) -> bytes:
    """UTF-8 JSON; ``indent=None`` for data.json (machine-readable, and ``json`` only uses its fast
    encoder without indentation: a wave writes a thousand of them)."""
    return json.dumps(payload, ensure_ascii=False, indent=indent, default=str).encode("utf-8")


def _csv(columns: list[str], records: list[dict]) -> bytes:
    """A collection as CSV, header row first, with the values data.json holds (the same dates,
    numbers and nulls as empty cells; a nested value as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_csv_cell(record.get(str(column))) for column in columns])  # data.json's keys are text
    return out.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _zip_module(password: str | None) -> Any:
    """``zipfile``, or ``pyzipper`` when a password asks for AES (checked before anything is written)."""
    if not password:
        return zipfile
    try:
        import pyzipper
    except ImportError:
        raise TerminalError(
            "an encrypted package.zip needs pyzipper: install pyzipper (pip install pyzipper) "
            "or build the package without zip_password"
        ) from None
    return pyzipper


def _open_zip(module: Any, sink: ObjectUpload, password: str | None) -> zipfile.ZipFile:
    """The package's zip, written straight into its upload (deflated; AES-256 with a password)."""
    if not password:
        return module.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
    archive = module.AESZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, encryption=module.WZ_AES)
    archive.setpassword(password.encode("utf-8"))
    return archive


@contextmanager
def open_package(s3: Any, bucket: str, request_id: str, password: str | None = None) -> Iterator[zipfile.ZipFile]:
    """The built package's zip, read from the store, for tools and tests (``with ... as archive``).

    Spooled to disk above 32 MiB, removed when the block ends. Pass the request's password for an
    encrypted package.
    """
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as spool:
        stream_into(s3, bucket, f"{request_id}/{ZIP_NAME}", spool)
        spool.seek(0)
        module = _zip_module(password)
        with module.AESZipFile(spool) if password else module.ZipFile(spool) as archive:
            if password:
                archive.setpassword(password.encode("utf-8"))
            yield archive


def requests_with_keys(s3: Any, bucket: str, request_ids: list[str], page_size: int = 1000) -> set[str] | None:
    """Those of ``request_ids`` that already hold keys under ``<request_id>/`` (an earlier build),
    from one listing of the ids' common prefix by folder; the others' packages start from nothing.

    A wave's ids share a prefix (``<wave>-00001``, ...), so this is one call where listing each
    package's prefix was one call per request, each a scan of the whole bucket on some stores.
    :returns: None when that listing would cost more calls than one per request (the ids share no
        prefix, or many other packages share theirs): list each package then.
    """
    common = os.path.commonprefix(list(request_ids))
    if not common:
        return None
    wanted, found = set(request_ids), set()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=common, Delimiter="/", PaginationConfig={"PageSize": page_size}
    )
    for calls, page in enumerate(pages, start=1):
        found.update(p["Prefix"][:-1] for p in page.get("CommonPrefixes", []) if p["Prefix"][:-1] in wanted)
        if page.get("IsTruncated") and calls >= len(wanted):  # the next page would cost more
            return None
    return found


def _keys_under(s3: Any, bucket: str, prefix: str) -> set[str]:
    return {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    }


def _delete_stale(s3: Any, bucket: str, stale_keys: set[str]) -> int:
    """Delete the keys an earlier build left that this one did not write again."""
    stale = sorted(stale_keys)
    for i in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i : i + 1000]], "Quiet": True})
    return len(stale)
