"""Access / portability packages on a real moto S3 server, and direct transmission (Art. 20(2)).

The staging area is filled with hand-made ``ExportResult``s (internal units
``fabconnect_app.account|activity|commerce``, object unit ``fabconnect_s3.objects`` with
staged files, partner unit ``payflow``); the real data map describes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import jsonschema
import pandas as pd
import pytest
import requests
from moto.server import ThreadedMotoServer

from include import settings
from include.constants import MAX_PRESIGN_SECONDS
from include.dsr.connectors.base import REQUEST_ID_COLUMN, ExportResult
from include.dsr.connectors.staging import Staging
from include.dsr.core.data_map import DataMap, load_data_map
from include.dsr.core.errors import CheckFailedError, TerminalError, TransientError
from include.dsr.package import build
from include.dsr.package.build import PackageResult, build_package, open_package
from include.dsr.package.transmit import transmit_package
from tests.support import botocore_hook

BUCKET = "fabconnect-dsr-exports-test"
WEEK = 7 * 24 * 3600
SCRIPT = "<script>alert('x')</script>"
SPEC_BYTES = b"ISO-10303-21; bracket \x00\x01 binary"
ID_DOC_BYTES = b"%PDF-1.7 passport scan"
INFO = {"received_at": "2026-03-05T09:30:00+00:00", "due_at": "2026-04-07T23:59:00+02:00", "jurisdiction": "GDPR"}


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A boto3 client of a real moto S3 server on 127.0.0.1 (free port), with the exports bucket."""
    werkzeug = logging.getLogger("werkzeug")  # moto's request lines would drown test output
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()
    werkzeug.setLevel(level)


@pytest.fixture(scope="module")
def data_map() -> DataMap:
    return load_data_map()


@pytest.fixture
def request_id() -> str:
    return f"req-{uuid.uuid4().hex[:10]}"


def _frame(request_id: str, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame[REQUEST_ID_COLUMN] = request_id
    return frame


def _stage(s3: Any, request_id: str) -> Staging:
    """Stage one subject's gathered data: internal groups, objects and a partner."""
    staging = Staging(s3, BUCKET, request_id)
    rid = request_id
    account = ExportResult(
        "fabconnect_app",
        frames={
            "accounts": _frame(
                rid,
                [
                    {
                        "id": 7,
                        "role": "customer",
                        "first_name": "Zoë",
                        "last_name": "Müller",
                        "email": "zoe@example.com",
                        "phone": None,
                        "company": "Acme & Söhne",
                        "job_title": SCRIPT,
                        "created_at": "2025-01-02T03:04:05+00:00",
                    }
                ],
                ["id", "role", "first_name", "last_name", "email", "phone", "company", "job_title", "created_at"],
            ),
            "addresses": _frame(rid, [], ["id", "account_id", "kind", "line1", "city"]),
            "id_documents": _frame(
                rid,
                [{"id": 3, "account_id": 7, "doc_type": "passport", "object_key": "ids/7.pdf"}],
                ["id", "account_id", "doc_type", "object_key"],
            ),
        },
    )
    activity = ExportResult(
        "fabconnect_app",
        frames={
            "web_logs": _frame(
                rid,
                [
                    {
                        "id": 1,
                        "account_id": 7,
                        "ip_address": "203.0.113.9",
                        "path": "/quotes",
                        "requested_at": "2026-02-01T10:00:00Z",
                    }
                ],
                ["id", "account_id", "ip_address", "path", "requested_at"],
            ),
            "pricing_features": _frame(
                rid, [{"id": 1, "account_id": 7, "segment": "price-sensitive"}], ["id", "account_id", "segment"]
            ),
        },
    )
    commerce = ExportResult(
        "fabconnect_app",
        frames={
            "orders": _frame(
                rid,
                [{"id": 11, "account_id": 7, "total_eur": 129.5, "ordered_at": "2026-01-15"}],
                ["id", "account_id", "total_eur", "ordered_at"],
            ),
            "invoices": _frame(
                rid,
                [{"id": 21, "order_id": 11, "invoice_number": "INV-21", "net_eur": 108.82}],
                ["id", "order_id", "invoice_number", "net_eur"],
            ),
        },
    )
    objects = {"specs": ("specs/q-1/bracket.step", SPEC_BYTES), "id_documents": ("ids/7.pdf", ID_DOC_BYTES)}
    frames, files = {}, {}
    for name, (key, body) in objects.items():
        staged_key = f"{staging.files_prefix}{key}"
        s3.put_object(Bucket=BUCKET, Key=staged_key, Body=body)
        frames[name] = _frame(
            rid,
            [
                {
                    "object_key": key,
                    "size_bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "staged_key": staged_key,
                }
            ],
            ["object_key", "size_bytes", "sha256", "staged_key"],
        )
        files[name] = [staged_key]
    payflow = ExportResult(
        "payflow",
        frames={
            "customers": _frame(
                rid, [{"id": "cus_1", "email": "zoe@example.com", "name": "Zoë Müller"}], ["id", "email", "name"]
            ),
            "charges": _frame(
                rid,
                [{"id": "ch_1", "email": "zoe@example.com", "amount_eur": 129.5, "charged_at": "2026-01-15T12:00:00Z"}],
                ["id", "email", "amount_eur", "charged_at"],
            ),
        },
    )
    staging.put_result(account, unit="fabconnect_app.account")
    staging.put_result(activity, unit="fabconnect_app.activity")
    staging.put_result(commerce, unit="fabconnect_app.commerce")
    staging.put_result(ExportResult("fabconnect_s3", frames=frames, files=files), unit="fabconnect_s3.objects")
    staging.put_result(payflow)
    return staging


def _build(s3: Any, data_map: DataMap, request_id: str, right: str = "access", **kwargs: Any) -> PackageResult:
    kwargs.setdefault("link_seconds", 3600)
    return build_package(s3, BUCKET, request_id, right, data_map, {**INFO, "request_id": request_id}, **kwargs)


@pytest.fixture(scope="module")
def access(s3: Any, data_map: DataMap) -> PackageResult:
    """One access package shared by the read-only tests (tests that change a package build their own)."""
    _stage(s3, "req-access-shared")
    return _build(s3, data_map, "req-access-shared")


@pytest.fixture(scope="module")
def portability(s3: Any, data_map: DataMap) -> PackageResult:
    _stage(s3, "req-portability-shared")
    return _build(s3, data_map, "req-portability-shared", "portability")


def _file(s3: Any, result: PackageResult, path: str, password: str | None = None) -> bytes:
    """A file of the package, as the subject reads it from the zip."""
    with open_package(s3, BUCKET, result.prefix.rstrip("/"), password) as archive:
        return archive.read(path)


def _names(s3: Any, result: PackageResult) -> set[str]:
    with open_package(s3, BUCKET, result.prefix.rstrip("/")) as archive:
        return set(archive.namelist())


def _get(s3: Any, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@contextmanager
def _counting(s3: Any) -> Iterator[list[str]]:
    """``(operation, Prefix)`` of the S3 calls ``s3`` makes inside the block, in order."""
    calls: list[tuple[str, str | None]] = []
    record = lambda model, params, **_: calls.append((model.name, params.get("Prefix")))
    with botocore_hook(s3, "before-parameter-build.s3", record):
        yield calls


def _listing(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


# -- access ----------------------------------------------------------------------------------
@pytest.mark.parametrize("right", [pytest.param("access", id="access"), pytest.param("portability", id="portability")])
def test_manifest_lists_every_file_with_the_sha256_of_its_stored_bytes(s3, data_map, request_id, right):
    _stage(s3, request_id)
    result = _build(s3, data_map, request_id, right)
    manifest = json.loads(_get(s3, result.manifest_key))
    listed = {f["path"]: f for f in manifest["files"]}
    assert result.keys == [result.manifest_key, result.zip_key]
    assert result.keys == [f"{request_id}/manifest.json", f"{request_id}/package.zip"]
    assert _listing(s3, result.prefix) == result.keys  # no loose copy of the subject's data
    with open_package(s3, BUCKET, request_id) as archive:
        assert set(archive.namelist()) == set(listed) | {"manifest.json"}
        assert archive.read("manifest.json") == _get(s3, result.manifest_key)  # the same manifest both places
        for path, entry in listed.items():
            body = archive.read(path)
            assert (entry["sha256"], entry["size_bytes"]) == (hashlib.sha256(body).hexdigest(), len(body)), path
    zipped = _get(s3, result.zip_key)
    assert (result.zip_sha256, result.zip_size_bytes) == (hashlib.sha256(zipped).hexdigest(), len(zipped))
    assert result.files == len(listed) + 1
    assert manifest["request_id"] == request_id
    assert manifest["right"] == right
    assert manifest["record_count_total"] == sum(result.counts.values())
    assert result.manifest_sha256 == hashlib.sha256(_get(s3, result.manifest_key)).hexdigest()
    assert {s: v["collections"] for s, v in manifest["systems"].items()} == result.collection_counts
    assert result.counts["payflow"] == 2
    assert manifest["systems"]["payflow"] == {
        "collections": {"customers": 1, "charges": 1},
        "status": "completed",
        "units": {"payflow": "completed"},
    }
    assert set(manifest["systems"]["fabconnect_app"]["units"]) == {
        "fabconnect_app.account",
        "fabconnect_app.activity",
        "fabconnect_app.commerce",
    }
    assert datetime.fromisoformat(manifest["link_expires_at"]) == result.expires_at


@pytest.mark.parametrize(
    "staged_with",
    [
        pytest.param({"sha256": "f" * 64}, id="other-sha256"),
        pytest.param({"sha256": hashlib.sha256(SPEC_BYTES).hexdigest().upper()}, id="upper-case-sha256"),
        pytest.param({"size_bytes": 1}, id="right-hash-wrong-size"),
        pytest.param({"size_bytes": -1}, id="negative-size"),
        pytest.param({"size_bytes": None}, id="no-size"),
        pytest.param({"sha256": None}, id="no-sha256"),
        pytest.param({"size_bytes": 10**12}, id="size-too-large-for-one-copy"),
    ],
)
def test_the_manifest_hashes_the_copied_bytes_whatever_the_staged_row_says(s3, data_map, request_id, staged_with):
    """The manifest describes the package's copy as stored, never what the staging row claims."""
    staging = _stage(s3, request_id)
    result = staging.load("fabconnect_s3.objects")
    frame = result.frames["specs"]
    for column, value in staged_with.items():
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value
    staging.put_result(result, unit="fabconnect_s3.objects")
    package = _build(s3, data_map, request_id)
    manifest = json.loads(_get(s3, package.manifest_key))
    entry = next(f for f in manifest["files"] if f["path"] == "files/specs/q-1/bracket.step")
    assert (entry["sha256"], entry["size_bytes"]) == (hashlib.sha256(SPEC_BYTES).hexdigest(), len(SPEC_BYTES))


def test_access_data_json_round_trips_without_helper_columns(s3, data_map, access):
    raw = _file(s3, access, "data.json")
    assert "Zoë".encode() in raw  # UTF-8, not \u escapes
    data = json.loads(raw)
    assert list(data) == ["fabconnect_app", "fabconnect_s3", "payflow"]  # data-map order
    account = data["fabconnect_app"]["accounts"][0]
    assert account == {
        "id": 7,
        "role": "customer",
        "first_name": "Zoë",
        "last_name": "Müller",
        "email": "zoe@example.com",
        "phone": None,
        "company": "Acme & Söhne",
        "job_title": SCRIPT,
        "created_at": "2025-01-02T03:04:05+00:00",
    }
    assert data["fabconnect_app"]["addresses"] == []
    assert data["fabconnect_app"]["orders"][0]["total_eur"] == 129.5
    assert data["fabconnect_s3"]["specs"] == [
        {
            "object_key": "specs/q-1/bracket.step",
            "size_bytes": len(SPEC_BYTES),
            "sha256": hashlib.sha256(SPEC_BYTES).hexdigest(),
            "package_file": "files/specs/q-1/bracket.step",
        }
    ]
    assert REQUEST_ID_COLUMN not in raw.decode()
    assert access.collection_counts["fabconnect_app"]["pricing_features"] == 1  # access keeps inferred data


@pytest.mark.parametrize(
    ("path", "columns", "rows"),
    [
        pytest.param(
            "csv/fabconnect_app/accounts.csv",
            ["id", "role", "first_name", "last_name", "email", "phone", "company", "job_title", "created_at"],
            1,
            id="accounts",
        ),
        pytest.param("csv/payflow/charges.csv", ["id", "email", "amount_eur", "charged_at"], 1, id="partner"),
        pytest.param(
            "csv/fabconnect_s3/specs.csv", ["object_key", "size_bytes", "sha256", "package_file"], 1, id="objects"
        ),
    ],
)
def test_access_csv_parses_with_a_header_row(s3, access, path, columns, rows):
    frame = pd.read_csv(io.BytesIO(_file(s3, access, path)), encoding="utf-8")
    assert list(frame.columns) == columns
    assert len(frame) == rows


def test_every_csv_holds_the_values_of_data_json(s3, access):
    """Same rows, same columns, same values (a null is an empty cell, text is quoted where it needs it)."""
    import csv

    data = json.loads(_file(s3, access, "data.json"))
    csv_paths = [name for name in _names(s3, access) if name.startswith("csv/")]
    assert len(csv_paths) == sum(1 for colls in data.values() for records in colls.values() if records)
    for path in csv_paths:
        _, system, name = path.removesuffix(".csv").split("/")
        header, *rows = list(csv.reader(io.StringIO(_file(s3, access, path).decode("utf-8"))))
        records = data[system][name]
        assert header == list(records[0]), path
        expected = [[_as_cell(record[c]) for c in header] for record in records]
        assert rows == expected, path


def _as_cell(value) -> str:
    """How a data.json value reads in a CSV cell: null empty, nested values as JSON, the rest as text."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def test_a_csv_cell_keeps_separators_quotes_newlines_and_nested_values():
    import csv

    from include.dsr.package.build import _csv

    records = [
        {"id": 1, "note": 'a, "quoted"\nline', "tags": ["x", "ü"], "empty": None, "amount": 0.1},
        {"id": 2, "note": "", "tags": {"k": 1}, "empty": None, "amount": 1e-05},
    ]
    body = _csv(["id", "note", "tags", "empty", "amount"], records)
    assert list(csv.reader(io.StringIO(body.decode("utf-8")))) == [
        ["id", "note", "tags", "empty", "amount"],
        ["1", 'a, "quoted"\nline', '["x", "ü"]', "", "0.1"],
        ["2", "", '{"k": 1}', "", "1e-05"],
    ]


def test_an_empty_collection_has_no_csv_but_is_listed_in_data_and_manifest(s3, access):
    paths = {f["path"] for f in json.loads(_file(s3, access, "manifest.json"))["files"]}
    assert "csv/fabconnect_app/addresses.csv" not in paths
    assert not any(name.endswith("/addresses.csv") for name in _names(s3, access))
    assert json.loads(_file(s3, access, "data.json"))["fabconnect_app"]["addresses"] == []
    assert access.collection_counts["fabconnect_app"]["addresses"] == 0
    assert "csv/fabconnect_app/accounts.csv" in paths  # a collection with records keeps its CSV


def test_access_copies_object_files_under_their_original_key(s3, access):
    assert _file(s3, access, "files/specs/q-1/bracket.step") == SPEC_BYTES
    assert _file(s3, access, "files/ids/7.pdf") == ID_DOC_BYTES


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param("PayFlow Payments Ltd", id="named recipient"),
        pytest.param("Payment processor for Customers&#39; card payments", id="recipient role"),
        pytest.param("EEA: no transfer safeguard needed", id="transfer safeguard"),
        pytest.param("Create and run your account and provide the Services", id="purpose"),
        pytest.param("Art. 6(1)(b) GDPR, performance of the contract", id="legal basis"),
        pytest.param("10 years from order date", id="retention period"),
        pytest.param("Accounting records, §257 HGB / §147 AO: 10 years", id="retention basis"),
        pytest.param("Legal hold", id="legal hold"),
        pytest.param("Inferred by Fabconnect from other data about you", id="source"),
        pytest.param("Email address", id="data category"),
        pytest.param("lodge a complaint with a data protection supervisory authority", id="complaint right"),
        pytest.param(
            "does not take decisions producing legal or similarly significant effects", id="automated decisions"
        ),
        pytest.param("privacy@fabconnect.me", id="controller contact"),
        pytest.param("Withdraw consent", id="rights"),
        pytest.param("Billing and shipping addresses", id="searched but nothing found"),
        pytest.param("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;", id="escaped value"),
        pytest.param("Acme &amp; Söhne", id="escaped ampersand, UTF-8"),
    ],
)
def test_access_report_has_the_art_15_information(s3, access, expected):
    assert expected in _file(s3, access, "report.html").decode("utf-8")


def test_access_report_is_one_self_contained_file_without_raw_script(s3, access):
    html = _file(s3, access, "report.html").decode("utf-8")
    assert "<script" not in html
    assert not any(marker in html for marker in ("<link", " src=", "@import", "url("))
    assert "CardWorks" not in html  # only recipients that are part of this package are named


# -- portability -----------------------------------------------------------------------------
def test_portability_keeps_only_provided_and_observed_data(s3, portability):
    data = json.loads(_file(s3, portability, "data.json"))
    assert set(data["fabconnect_app"]) == {"accounts", "addresses", "web_logs", "orders"}
    assert set(data["fabconnect_s3"]) == {"specs"}
    names = _names(s3, portability)
    assert not [n for n in names if any(x in n for x in ("pricing_features", "id_documents", "invoices", "ids/7"))]
    assert "schema.json" in names
    assert "report.html" not in names
    assert portability.url.split("?")[0].endswith("req-portability-shared/package.zip")


def test_portability_schema_validates_data_and_says_provided_or_observed(s3, portability):
    schema = json.loads(_file(s3, portability, "schema.json"))
    data = json.loads(_file(s3, portability, "data.json"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)
    app = schema["properties"]["fabconnect_app"]["properties"]
    assert app["accounts"]["x-portability"] == "provided"
    assert "Provided data" in app["accounts"]["description"]
    assert app["web_logs"]["x-portability"] == "observed"
    assert "Observed data" in app["web_logs"]["description"]
    assert app["accounts"]["items"]["properties"]["email"]["description"] == "Email address"
    tampered = {**data, "fabconnect_app": {**data["fabconnect_app"], "pricing_features": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tampered, schema, cls=jsonschema.Draft202012Validator)


def test_portability_drops_a_system_left_with_nothing(s3, data_map, request_id):
    staging = Staging(s3, BUCKET, request_id)
    staging.put_result(
        ExportResult(
            "fabconnect_app",
            frames={"accounts": _frame(request_id, [{"id": 7, "email": "solo@example.com"}], ["id", "email"])},
        ),
        unit="fabconnect_app.account",
    )
    staging.put_result(
        ExportResult(
            "fabconnect_s3",
            frames={"id_documents": _frame(request_id, [], ["object_key", "size_bytes", "sha256", "staged_key"])},
        ),
        unit="fabconnect_s3.objects",
    )
    result = _build(s3, data_map, request_id, "portability")
    assert list(json.loads(_file(s3, result, "data.json"))) == ["fabconnect_app"]
    assert list(json.loads(_get(s3, result.manifest_key))["systems"]) == ["fabconnect_app"]


# -- idempotency, links, zip, refusals -------------------------------------------------------
def test_requests_with_keys_finds_earlier_builds_with_one_listing(s3, request_id):
    ids = [f"{request_id}-{i}" for i in range(12)]
    others = [f"{request_id}-1x/data.json", f"{request_id}-100/data.json", f"{request_id}-2"]  # no member's folder
    for key in [f"{ids[1]}/data.json", f"{ids[10]}/csv/a/b.csv", *others, f"{ids[3]}-old/data.json"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"old")
    with _counting(s3) as calls:
        found = build.requests_with_keys(s3, BUCKET, ids)
    # "-10" is a request of its own; "-1x", "-100", "-3-old" only share a member's prefix; a key
    # "-2" without a folder is no package
    assert found == {ids[1], ids[10]}
    assert calls == [("ListObjectsV2", f"{request_id}-")]


def test_requests_with_keys_gives_up_where_one_listing_would_cost_more(s3, request_id):
    assert build.requests_with_keys(s3, BUCKET, ["alpha-1", "beta-2"]) is None  # nothing shared
    for i in range(5):  # other packages sharing the prefix: 3 pages of 2
        s3.put_object(Bucket=BUCKET, Key=f"{request_id}-crowd-{i}/data.json", Body=b"x")
    one, two = f"{request_id}-crowd-1", f"{request_id}-crowd-2"
    assert build.requests_with_keys(s3, BUCKET, [one, two], page_size=2) is None  # 3 calls for 2 requests
    assert build.requests_with_keys(s3, BUCKET, [one, two, f"{request_id}-crowd-9"], page_size=2) == {one, two}


def test_a_caller_that_listed_nothing_earlier_gets_no_listing_and_no_deletes(s3, data_map, request_id):
    _stage(s3, request_id)
    with _counting(s3) as calls:
        package = _build(s3, data_map, request_id, earlier_keys=set())
    assert ("ListObjectsV2", f"{request_id}/") not in calls  # its own staging is listed, not the package
    assert "DeleteObjects" not in {name for name, _ in calls}
    assert _listing(s3, package.prefix) == package.keys


def test_rerun_overwrites_the_same_keys_and_deletes_stale_ones(s3, data_map, request_id):
    _stage(s3, request_id)
    first = _build(s3, data_map, request_id)
    # what a package of the former layout (one object per file) left
    stale = [f"{request_id}/csv/old_system/gone.csv", f"{request_id}/data.json", f"{request_id}/report.html"]
    neighbour = f"{request_id}0/data.json"  # another request whose id starts with this one
    for key in [*stale, neighbour]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"old")
    again = _build(s3, data_map, request_id)
    assert again.keys == first.keys
    assert _listing(s3, again.prefix) == again.keys
    assert not set(stale) & set(_listing(s3, again.prefix))
    assert _get(s3, neighbour) == b"old"


@pytest.mark.parametrize("right", [pytest.param("access", id="access"), pytest.param("portability", id="portability")])
def test_presigned_link_opens_the_zip_and_never_exceeds_seven_days(s3, data_map, request_id, right):
    _stage(s3, request_id)
    before = datetime.now(UTC)
    result = _build(s3, data_map, request_id, right, link_seconds=30 * 24 * 3600)
    response = requests.get(result.url, timeout=10)
    assert response.status_code == 200
    assert response.content == _get(s3, f"{request_id}/package.zip")
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{request_id}.zip"'
    assert MAX_PRESIGN_SECONDS == WEEK
    query = parse_qs(urlsplit(result.url).query)
    if "X-Amz-Expires" in query:  # SigV4: relative lifetime
        assert int(query["X-Amz-Expires"][0]) == WEEK
    else:  # SigV2 (boto3's default presigner for us-east-1): absolute epoch
        assert int(query["Expires"][0]) <= before.timestamp() + WEEK + 2
    assert before + timedelta(seconds=WEEK - 2) <= result.expires_at <= before + timedelta(seconds=WEEK + 2)
    assert result.url not in repr(result)


def test_zip_holds_every_file_and_is_the_linked_object(s3, data_map, request_id):
    _stage(s3, request_id)
    result = _build(s3, data_map, request_id)
    assert result.zip_key == f"{request_id}/package.zip"
    body = requests.get(result.url, timeout=10).content
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert set(archive.namelist()) == {f["path"] for f in manifest["files"]} | {"manifest.json"}
        assert archive.read("files/specs/q-1/bracket.step") == SPEC_BYTES
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]


def test_a_package_costs_the_store_two_writes_and_one_read_per_copied_file(s3, data_map, request_id):
    """However many collections it holds: the zip and the manifest are written, each staged file
    read once, nothing of the package read back."""
    _stage(s3, request_id)
    sent: list[tuple[str, str]] = []  # (method, path inside the bucket) of every request sent
    record = lambda request, **_: sent.append(
        (request.method, unquote(urlsplit(request.url).path).removeprefix(f"/{BUCKET}/"))
    )
    with botocore_hook(s3, "before-send.s3", record):
        _build(s3, data_map, request_id, earlier_keys=set())
    package = [(method, path) for method, path in sent if path.startswith(f"{request_id}/")]
    assert package == [("PUT", f"{request_id}/package.zip"), ("PUT", f"{request_id}/manifest.json")]
    staging = f"_staging/{request_id}/"
    file_reads = [path for method, path in sent if method == "GET" and path.startswith(staging + "files/")]
    assert sorted(file_reads) == [staging + "files/ids/7.pdf", staging + "files/specs/q-1/bracket.step"]
    assert {method for method, path in sent if path.startswith(staging)} == {"GET"}  # the staging area is only read


def test_zip_with_a_password_is_aes_encrypted(s3, data_map, request_id):
    import pyzipper

    _stage(s3, request_id)
    result = _build(s3, data_map, request_id, zip_password="correct horse")
    assert _file(s3, result, "files/ids/7.pdf", password="correct horse") == ID_DOC_BYTES
    body = requests.get(result.url, timeout=10).content
    with pyzipper.AESZipFile(io.BytesIO(body)) as archive:
        info = archive.getinfo("manifest.json")
        assert info.flag_bits & 0x1  # encrypted entry
        with pytest.raises(RuntimeError):
            archive.read("manifest.json")  # no password given
        archive.setpassword(b"correct horse")
        assert archive.read("files/specs/q-1/bracket.step") == SPEC_BYTES
    with pytest.raises(RuntimeError, match="encrypted"):
        zipfile.ZipFile(io.BytesIO(body)).read("manifest.json")  # plain zip tools cannot open it


@pytest.mark.parametrize(
    ("right", "request_id_", "link_seconds", "match"),
    [
        pytest.param("erasure", "req-ok-1", 3600, "has no package", id="unknown right"),
        pytest.param("access", "../etc", 3600, "request_id", id="request id with a slash"),
        pytest.param("access", "req-ok-2", 0, "link_seconds", id="zero link lifetime"),
    ],
)
def test_bad_arguments_are_refused(s3, data_map, right, request_id_, link_seconds, match):
    with pytest.raises(TerminalError, match=match):
        build_package(s3, BUCKET, request_id_, right, data_map, {}, link_seconds)


def test_nothing_staged_is_refused_and_leaves_an_existing_package_alone(s3, data_map, request_id):
    staging = _stage(s3, request_id)
    first = _build(s3, data_map, request_id)
    staging.clear()  # e.g. the package task re-run after the staging area was cleared
    with pytest.raises(TerminalError, match="nothing is staged"):
        _build(s3, data_map, request_id)
    assert _listing(s3, first.prefix) == first.keys


def test_rows_of_another_request_fail_the_build(s3, data_map, request_id):
    Staging(s3, BUCKET, request_id).put_result(
        ExportResult(
            "payflow",
            frames={
                "customers": _frame(
                    "req-someone-else", [{"id": "cus_9", "email": "other@example.com"}], ["id", "email"]
                )
            },
        )
    )
    with pytest.raises(CheckFailedError, match="another request"):
        _build(s3, data_map, request_id)


def test_a_collection_missing_from_the_data_map_is_refused(s3, data_map, request_id):
    Staging(s3, BUCKET, request_id).put_result(
        ExportResult("payflow", frames={"disputes": _frame(request_id, [], ["id"])})
    )
    with pytest.raises(TerminalError, match="payflow.disputes is not in the data map"):
        _build(s3, data_map, request_id)


# -- transmission ----------------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    """Another controller: the path chooses the answer; bodies are kept on the server."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), body))
        path = urlsplit(self.path).path
        if path == "/slow":
            time.sleep(1.0)
        status = {"/ok": 202, "/fail": 500, "/bad": 400, "/busy": 429, "/moved": 302, "/slow": 200}[path]
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def declared(receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test receiver (and a closed loopback port) as the declared receiving controllers."""
    monkeypatch.setattr(settings, "RECEIVING_CONTROLLERS", (_url(receiver, "/"), "http://127.0.0.1:1/dsr"))


def test_transmit_sends_schema_data_and_manifest(s3, portability, receiver, declared, caplog):
    package = portability.transmit_body()
    parts = ("schema", "data", "manifest")
    assert package == {part: json.loads(_file(s3, portability, f"{part}.json")) for part in parts}
    caplog.set_level(logging.DEBUG)
    receipt = transmit_package(_url(receiver, "/ok?token=s3cr3t"), package)
    path, headers, body = receiver.received[-1]
    assert json.loads(body) == package
    assert "Zoë".encode() in body
    assert receipt["status_code"] == 202
    assert receipt["bytes"] == len(body)
    assert receipt["sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["Content-Digest"].startswith("sha-256=:")
    assert "s3cr3t" not in caplog.text
    assert "zoe@example.com" not in caplog.text
    assert "s3cr3t" not in str(receipt)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        pytest.param("/fail", TransientError, id="500 is transient"),
        pytest.param("/busy", TransientError, id="429 is transient"),
        pytest.param("/bad", TerminalError, id="400 is terminal"),
        pytest.param("/moved", TerminalError, id="redirect is not followed"),
    ],
)
def test_transmit_maps_http_errors(receiver, declared, path, error):
    with pytest.raises(error) as info:
        transmit_package(_url(receiver, f"{path}?token=s3cr3t"), {"schema": {}, "data": {}, "manifest": {}})
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "error", "kwargs"),
    [
        pytest.param("slow", TransientError, {"timeout": 0.2}, id="timeout is transient"),
        pytest.param("http://127.0.0.1:1/dsr?token=s3cr3t", TransientError, {}, id="connection refused is transient"),
        pytest.param("http://receiver.example.com/dsr?token=s3cr3t", TerminalError, {}, id="plain http is refused"),
        pytest.param("not a url", TerminalError, {}, id="not a url"),
        pytest.param("http://127.0.0.1:5432/dsr?token=s3cr3t", TerminalError, {}, id="undeclared internal port"),
    ],
)
def test_transmit_failures(receiver, declared, url, error, kwargs):
    url = _url(receiver, "/slow?token=s3cr3t") if url == "slow" else url
    with pytest.raises(error) as info:
        transmit_package(url, {"schema": {}, "data": {}, "manifest": {}}, **kwargs)
    assert "s3cr3t" not in str(info.value)
    assert info.value.__cause__ is None


def test_an_access_package_has_no_transmit_body(access):
    with pytest.raises(TerminalError, match="schema.json is missing"):
        access.transmit_body()


def test_transmit_refuses_an_incomplete_package(receiver, declared):
    with pytest.raises(TerminalError, match="lacks"):
        transmit_package(_url(receiver, "/ok"), {"data": {}})


def test_a_report_with_no_records_points_at_no_csv_folder(data_map, access, s3):
    import pandas as pd

    from include.dsr.package.report import render_access_report

    frames = {"fabconnect_app": {"accounts": pd.DataFrame(columns=["id", "email"])}}
    empty = render_access_report(
        data_map,
        {"fabconnect_app": {"accounts": []}},
        frames,
        {**INFO, "request_id": "req-nothing", "generated_at": "2026-12-03T10:00:00+00:00"},
    )
    assert "<code>data.json</code>." in empty
    assert "csv/" not in empty
    assert "<code>csv/</code> folder" in _file(s3, access, "report.html").decode("utf-8")


def test_a_wave_slice_holds_only_its_own_rows_without_the_request_id(s3):
    """The wave's staging is grouped by request once; a row without a request id goes to nobody,
    not even to a request whose id reads "nan" (request ids allow it)."""
    from include.dsr.connectors.staging import StagedBatch

    staging = Staging(s3, BUCKET, f"wave-{uuid.uuid4().hex[:8]}")
    orders = pd.DataFrame.from_records(
        [
            {"id": 1, "total_eur": 10.0, REQUEST_ID_COLUMN: "W-1"},
            {"id": 2, "total_eur": 20.0, REQUEST_ID_COLUMN: "W-2"},
            {"id": 3, "total_eur": 30.0, REQUEST_ID_COLUMN: "W-1"},
            {"id": 4, "total_eur": 40.0, REQUEST_ID_COLUMN: None},
            {"id": 5, "total_eur": 50.0, REQUEST_ID_COLUMN: "nan"},
        ]
    )
    staging.put_result(ExportResult("fabconnect_app", frames={"orders": orders}), unit="fabconnect_app.commerce")
    batch = StagedBatch(staging)
    got = {
        rid: batch.slice(rid).load("fabconnect_app.commerce").frames["orders"] for rid in ("W-1", "W-2", "nan", "W-3")
    }
    assert got["W-1"]["id"].tolist() == [1, 3]
    assert got["W-2"]["id"].tolist() == [2]
    assert got["nan"]["id"].tolist() == [5]
    assert got["W-3"].empty
    for frame in got.values():
        assert list(frame.columns) == ["id", "total_eur"]
    assert 4 not in {i for frame in got.values() for i in frame["id"]}
    assert batch.request_ids() == {"W-1", "W-2", "nan"}  # what the wave checks against its lines
