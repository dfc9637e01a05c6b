"""Partner simulators: the OpenDSR-style HTTP partner and the S3 drop-box responder, each
a real server (127.0.0.1, free port) over the tiny partner file of ``conftest.py``."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from include.demo.partners.api_server import PartnerApiServer
from include.demo.partners.dropbox_responder import DropboxResponder
from include.demo.partners.faults import Faults, SimClock
from include.demo.partners.store import PartnerStore
from include.dsr.core.identities import normalize_email

ALICE = "alice.example@example.com"
ALICE_ROWS = {"order_packages": [1, 4], "support_cases": [2]}


def body(
    request_id: str, request_type: str = "access", email: str | None = None, phone: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An OpenDSR request body for the given identities."""
    identities = [
        {"identity_type": kind, "identity_value": value}
        for kind, value in (("email", email), ("phone", phone))
        if value is not None
    ]
    return {
        "subject_request_id": request_id,
        "subject_request_type": request_type,
        "subject_identities": identities,
        "submitted_time": datetime.now(UTC).isoformat(),
        **extra,
    }


def ids(records: dict[str, list[dict]]) -> dict[str, list[int]]:
    """Row ids per table, tables without rows left out."""
    return {table: [row["id"] for row in rows] for table, rows in records.items() if rows}


def table_ids(path: Path) -> dict[str, list[int]]:
    """The row ids left in the partner's tables, read straight from the file."""
    with sqlite3.connect(path) as conn:
        result = {
            table: [i for (i,) in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
            for table in ("order_packages", "support_cases")
        }
    conn.close()
    return result


# --- HTTP partner -------------------------------------------------------------------------


def submit(api: requests.Session, server: PartnerApiServer, payload: dict[str, Any]) -> requests.Response:
    return api.post(f"{server.url}/opendsr/requests", json=payload, timeout=5)


def result_of(api: requests.Session, server: PartnerApiServer, request_id: str) -> requests.Response:
    return api.get(f"{server.url}/opendsr/requests/{request_id}/result", timeout=5)


def status_of(api: requests.Session, server: PartnerApiServer, request_id: str) -> dict[str, Any]:
    return api.get(f"{server.url}/opendsr/requests/{request_id}", timeout=5).json()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
        pytest.param({"Authorization": "test-token"}, id="not-bearer"),
    ],
)
def test_protocol_routes_require_the_bearer_token(api_partner, headers):
    url = api_partner.url
    assert requests.get(f"{url}/opendsr/discovery", headers=headers, timeout=5).status_code == 401
    assert requests.get(f"{url}/opendsr/requests/r-1", headers=headers, timeout=5).status_code == 401
    response = requests.post(f"{url}/opendsr/requests", json=body("r-1", email=ALICE), headers=headers, timeout=5)
    assert response.status_code == 401
    assert api_partner.book.count() == 0


def test_discovery_lists_types_and_identities(api, api_partner):
    response = api.get(f"{api_partner.url}/opendsr/discovery", timeout=5)
    assert response.status_code == 200
    assert response.json() == {
        "api_version": "0.1",
        "supported_subject_request_types": [
            "access",
            "portability",
            "erasure",
            "restriction",
            "restriction_lift",
            "rectification",
            "objection",
        ],
        "supported_identities": ["email", "phone"],
    }


@pytest.mark.parametrize(
    ("email", "phone", "expected"),
    [
        pytest.param(" ALICE.example@Example.com ", None, ALICE_ROWS, id="email-any-case-and-spaces"),
        pytest.param(None, "+49 40 999888", {"order_packages": [3], "support_cases": [3]}, id="phone-only"),
        pytest.param(
            "bob@example.com",
            "+4930123456",
            {"order_packages": [1, 2], "support_cases": [1]},
            id="any-identity-matches-shared-phone",
        ),
    ],
)
def test_access_returns_exactly_the_rows_matching_the_identities(api, api_partner, email, phone, expected):
    accepted = submit(api, api_partner, body("r-1", email=email, phone=phone))
    assert accepted.status_code == 202
    assert accepted.json()["request_status"] == "completed"
    status = status_of(api, api_partner, "r-1")
    assert set(status) == {
        "subject_request_id",
        "request_status",
        "received_time",
        "expected_completion_time",
        "completed_time",
    }
    assert status["completed_time"] is not None
    result = result_of(api, api_partner, "r-1")
    assert result.status_code == 200
    payload = result.json()
    assert payload["request_type"] == "access"
    assert ids(payload["records"]) == expected
    assert {table: n for table, n in payload["affected"].items() if n} == {t: len(v) for t, v in expected.items()}


def test_erasure_deletes_only_the_subjects_rows(api, api_partner, partner_db):
    assert submit(api, api_partner, body("r-1", "erasure", email=ALICE)).status_code == 202
    payload = result_of(api, api_partner, "r-1").json()
    assert payload["records"] == {}
    assert payload["affected"] == {"order_packages": 2, "support_cases": 1}
    assert table_ids(partner_db) == {"order_packages": [2, 3], "support_cases": [1, 3]}


def test_restriction_marks_rows_and_lift_clears_them(api, api_partner, partner_db):
    store = api_partner.book.store
    assert submit(api, api_partner, body("r-1", "restriction", phone="+4940999888")).status_code == 202
    assert result_of(api, api_partner, "r-1").json()["affected"] == {"order_packages": 1, "support_cases": 1}
    assert store.restrictions() == {"order_packages": [3], "support_cases": [3]}
    assert submit(api, api_partner, body("r-2", "restriction_lift", phone="+4940999888")).status_code == 202
    assert store.restrictions() == {}
    assert store.tables() == ["order_packages", "support_cases"]
    with sqlite3.connect(partner_db) as conn:  # no simulator column in the partner's tables
        assert [c[1] for c in conn.execute("PRAGMA table_info(support_cases)")] == ["id", "email", "phone", "note"]
    conn.close()


def rows_of(path: Path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    conn.close()
    return found


def test_rectification_writes_the_corrections_into_the_subjects_rows_only(api, api_partner, partner_db):
    before = {t: rows_of(partner_db, t) for t in ("order_packages", "support_cases")}
    corrections = {"email": " Alice.New@Example.COM ", "name": "Alice Nouveau", "company": "ignored: no column"}
    assert (
        submit(api, api_partner, body("r-1", "rectification", email=ALICE, corrections=corrections)).status_code == 202
    )
    assert result_of(api, api_partner, "r-1").json()["affected"] == {"order_packages": 2, "support_cases": 1}
    after = {t: rows_of(partner_db, t) for t in ("order_packages", "support_cases")}
    for table, ids_ in ALICE_ROWS.items():
        for old, new in zip(before[table], after[table], strict=True):
            if old[0] in ids_:
                assert new[1] == "alice.new@example.com"
                assert table != "order_packages" or new[3] == "Alice Nouveau"
            else:
                assert new == old  # Bob's and Carol's rows untouched


@pytest.mark.parametrize(
    "corrections",
    [None, {}, {"password": "x"}, {"email": "not-an-address"}, {"name": 7}],
)
def test_a_rectification_without_valid_corrections_is_refused(api, api_partner, partner_db, corrections):
    payload = body("r-1", "rectification", email=ALICE)
    if corrections is not None:
        payload["corrections"] = corrections
    before = rows_of(partner_db, "order_packages")
    response = submit(api, api_partner, payload)
    assert response.status_code == 400
    assert "not-an-address" not in response.text
    assert rows_of(partner_db, "order_packages") == before


def test_the_keep_fault_claims_a_rectification_and_changes_nothing(api, api_partner, partner_db):
    api_partner.faults = Faults(mode="keep")
    before = rows_of(partner_db, "order_packages")
    submit(api, api_partner, body("r-1", "rectification", email=ALICE, corrections={"email": "new@example.com"}))
    assert result_of(api, api_partner, "r-1").json()["affected"] == {"order_packages": 2, "support_cases": 1}
    assert rows_of(partner_db, "order_packages") == before


def test_an_objection_marks_the_subjects_rows_like_a_restriction(api, api_partner):
    assert submit(api, api_partner, body("r-1", "objection", email=ALICE)).status_code == 202
    assert api_partner.book.store.restrictions() == ALICE_ROWS


def test_reposting_a_request_returns_the_existing_one(api, api_partner, partner_db):
    first = submit(api, api_partner, body("r-1", "erasure", email=ALICE))
    again = submit(api, api_partner, body("r-1", "erasure", email=" Alice.Example@example.com"))
    assert again.status_code == 202
    assert again.json() == first.json()
    assert api.get(f"{api_partner.url}/_admin/state", timeout=5).json()["requests"] == 1
    assert result_of(api, api_partner, "r-1").json()["affected"] == {"order_packages": 2, "support_cases": 1}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(body("r-1", "erasure", email="bob@example.com"), id="other-subject"),
        pytest.param(body("r-1", "erasure", email=ALICE, phone="+4930123456"), id="extra-identity"),
        pytest.param(body("r-1", "access", email=ALICE), id="other-type"),
    ],
)
def test_reusing_a_request_id_for_another_request_is_409(api, api_partner, partner_db, payload):
    assert submit(api, api_partner, body("r-1", "erasure", email=ALICE)).status_code == 202
    response = submit(api, api_partner, payload)
    assert response.status_code == 409
    assert "r-1" in response.json()["error"]
    assert table_ids(partner_db) == {"order_packages": [2, 3], "support_cases": [1, 3]}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(body("r-1", "forget_me", email=ALICE), "subject_request_type", id="unknown-type"),
        pytest.param(body("r-1"), "subject_identities", id="no-identities"),
        pytest.param(
            body("r-1") | {"subject_identities": [{"identity_type": "ssn", "identity_value": "078-05-1120"}]},
            "identity_type",
            id="bad-identity-type",
        ),
        pytest.param(body("r-1", email="alice-at-example.com"), "identity_value", id="malformed-email"),
        pytest.param(
            body("r-1", email=ALICE, phone="+49 40 999888")
            | {
                "subject_identities": [
                    {"identity_type": "email", "identity_value": ALICE},
                    {"identity_type": "email", "identity_value": "bob@example.com"},
                ]
            },
            "more than one email",
            id="two-emails",
        ),
        pytest.param(
            {k: v for k, v in body("r-1", email=ALICE).items() if k != "submitted_time"},
            "submitted_time",
            id="no-submitted-time",
        ),
        pytest.param(body("../r-1", email=ALICE), "subject_request_id", id="unsafe-request-id"),
        pytest.param([body("r-1", email=ALICE)], "JSON object", id="not-an-object"),
    ],
)
def test_invalid_request_bodies_are_400_naming_the_field(api, api_partner, payload, field):
    response = submit(api, api_partner, payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error
    assert "alice" not in error.lower()
    assert api_partner.book.count() == 0


def test_a_body_that_is_not_json_is_400(api, api_partner):
    response = api.post(f"{api_partner.url}/opendsr/requests", data=b"{not json", timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}


@pytest.mark.parametrize("suffix", [pytest.param("", id="status"), pytest.param("/result", id="result")])
def test_unknown_request_is_404(api, api_partner, suffix):
    assert api.get(f"{api_partner.url}/opendsr/requests/nope{suffix}", timeout=5).status_code == 404


@pytest.mark.parametrize(
    ("fail_count", "expected"),
    [
        pytest.param(2, [500, 500, 202, 202], id="fail-twice-then-succeed"),
        pytest.param(-1, [500, 500, 500, 500], id="always-fail"),
    ],
)
def test_fail_mode_answers_500(api, api_partner, fail_count, expected):
    api_partner.faults = Faults(mode="fail", fail_count=fail_count)
    codes = [submit(api, api_partner, body("r-1", email=ALICE)).status_code for _ in expected]
    assert codes == expected
    assert api_partner.book.count() == (1 if fail_count > 0 else 0)
    assert api_partner.faults == (Faults() if fail_count > 0 else Faults(mode="fail", fail_count=-1))


@pytest.mark.parametrize(
    "first",
    [
        pytest.param({"fail": True}, id="a 500 before the body was read"),
        pytest.param({"token": "wrong"}, id="a 401"),
        pytest.param({"path": "/opendsr/nowhere"}, id="a 404"),
        pytest.param({}, id="a 202"),
    ],
)
def test_one_connection_carries_several_calls_whatever_the_first_answer(api_partner, first):
    """Keep-alive: the next call on the socket is read as a call, never as the rest of a body left unread."""
    import http.client
    from urllib.parse import urlsplit

    if first.get("fail"):
        api_partner.faults = Faults(mode="fail", fail_count=1)
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(api_partner.url).port, timeout=5)
    conn.connect()
    sock = conn.sock
    token = first.get("token", api_partner.token)
    payload = json.dumps(body("r-keep", email=ALICE)).encode()
    conn.request(
        "POST", first.get("path", "/opendsr/requests"), body=payload, headers={"Authorization": f"Bearer {token}"}
    )
    conn.getresponse().read()
    conn.request("GET", "/opendsr/discovery", headers={"Authorization": f"Bearer {api_partner.token}"})
    answer = conn.getresponse()
    assert (answer.status, json.loads(answer.read())["api_version"]) == (200, "0.1")
    assert conn.sock is sock  # the same connection served both
    conn.close()


def test_stall_mode_makes_clients_time_out(api, api_partner):
    api_partner.faults = Faults(mode="stall", stall_seconds=2.0)
    with pytest.raises(requests.exceptions.Timeout):
        api.get(f"{api_partner.url}/opendsr/discovery", timeout=0.5)
    assert api.get(f"{api_partner.url}/_admin/state", timeout=0.5).status_code == 200  # admin never stalls


def test_late_mode_completes_only_after_the_clock_passes_the_delay(api, api_partner):
    api_partner.faults = Faults(mode="late", late_hours=48)
    accepted = submit(api, api_partner, body("r-1", email=ALICE)).json()
    assert accepted["request_status"] == "pending"
    received = datetime.fromisoformat(accepted["received_time"])
    assert datetime.fromisoformat(accepted["expected_completion_time"]) - received == timedelta(hours=48)
    result = result_of(api, api_partner, "r-1")
    assert (result.status_code, result.json()) == (409, {"error": "not completed", "request_status": "pending"})

    clock_url = f"{api_partner.url}/_admin/clock"
    assert requests.post(clock_url, json={"advance_hours": 47}, timeout=5).json()["offset_hours"] == 47
    assert status_of(api, api_partner, "r-1")["request_status"] == "pending"
    requests.post(clock_url, json={"advance_hours": 2}, timeout=5)
    status = status_of(api, api_partner, "r-1")
    assert status["request_status"] == "completed"
    assert datetime.fromisoformat(status["completed_time"]) >= received + timedelta(hours=48)
    assert ids(result_of(api, api_partner, "r-1").json()["records"]) == ALICE_ROWS


def test_never_mode_accepts_but_never_completes(api, api_partner, partner_db):
    api_partner.faults = Faults(mode="never")
    assert submit(api, api_partner, body("r-1", "erasure", email=ALICE)).json()["request_status"] == "pending"
    api_partner.clock.advance(24 * 365)
    assert status_of(api, api_partner, "r-1")["request_status"] == "pending"
    assert result_of(api, api_partner, "r-1").status_code == 409
    assert table_ids(partner_db)["order_packages"] == [1, 2, 3, 4]


def test_lie_mode_returns_another_subjects_rows(api, api_partner):
    api_partner.faults = Faults(mode="lie")
    submit(api, api_partner, body("r-1", email=ALICE))
    records = result_of(api, api_partner, "r-1").json()["records"]
    emails = {normalize_email(row["email"]) for rows in records.values() for row in rows}
    assert ALICE in emails
    assert emails - {ALICE}, "a lying partner must slip in somebody else's rows"


def test_admin_routes_set_faults_advance_the_clock_and_report_state(api_partner):
    url = api_partner.url
    response = requests.put(f"{url}/_admin/faults", json={"mode": "late", "late_hours": 5}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"mode": "late", "fail_count": 0, "stall_seconds": 0.0, "late_hours": 5.0}
    assert api_partner.faults == Faults(mode="late", late_hours=5)
    assert requests.post(f"{url}/_admin/clock", json={"advance_hours": 3}, timeout=5).status_code == 200
    state = requests.get(f"{url}/_admin/state", timeout=5).json()
    assert state["faults"]["mode"] == "late"
    assert state["clock"]["offset_hours"] == 3
    assert state["requests"] == 0
    assert datetime.fromisoformat(state["clock"]["now"]) > datetime.now(UTC) + timedelta(hours=2)


@pytest.mark.parametrize(
    ("method", "route", "payload", "message"),
    [
        pytest.param(
            "PUT", "faults", {"mode": "explode"}, "valid modes: ok, fail, stall, late, never, lie", id="unknown-mode"
        ),
        pytest.param("PUT", "faults", {"mode": "fail"}, "fail_count", id="fail-without-count"),
        pytest.param("PUT", "faults", {"mode": "stall", "stall_seconds": -1}, "stall_seconds", id="negative-stall"),
        pytest.param(
            "PUT", "faults", {"mode": "ok", "colour": "red"}, "unknown fault fields: colour", id="unknown-field"
        ),
        pytest.param("POST", "clock", {"advance_hours": -2}, "advance_hours", id="clock-backwards"),
        pytest.param("POST", "clock", {}, "advance_hours", id="clock-without-hours"),
    ],
)
def test_admin_routes_refuse_bad_input(api_partner, method, route, payload, message):
    response = requests.request(method, f"{api_partner.url}/_admin/{route}", json=payload, timeout=5)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert api_partner.faults == Faults()


def partner_log(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the simulators logged, lower-cased."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("include.demo.partners")).lower()


PERSONAL_DATA = ("alice", "bob", "not-an-email", "4930123456", "hauptstr")


def test_api_logs_carry_ids_and_counts_but_no_personal_data(api, api_partner, caplog):
    caplog.set_level(logging.DEBUG, logger="include.demo.partners")
    submit(api, api_partner, body("r-1", email=ALICE))
    submit(api, api_partner, body("r-2", "erasure", email="bob@example.com", phone="+4930123456"))
    submit(api, api_partner, body("r-3", email="not-an-email"))
    result_of(api, api_partner, "r-1")
    logged = partner_log(caplog)
    assert "r-1" in logged
    assert "r-2" in logged
    assert not [secret for secret in PERSONAL_DATA if secret in logged]


# --- fault knobs and store --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"mode": "flaky"}, id="unknown-mode"),
        pytest.param({"mode": "fail", "fail_count": -2}, id="fail-count-below-minus-one"),
        pytest.param({"mode": "fail", "fail_count": "3"}, id="fail-count-not-int"),
        pytest.param({"mode": "late", "late_hours": float("nan")}, id="late-hours-nan"),
        pytest.param({"mode": "stall", "stall_seconds": True}, id="stall-seconds-bool"),
    ],
)
def test_faults_refuse_invalid_values(kwargs):
    with pytest.raises(ValueError):
        Faults(**kwargs)


def test_fail_count_runs_down_to_ok():
    faults = Faults(mode="fail", fail_count=2).after_failure()
    assert faults == Faults(mode="fail", fail_count=1)
    assert faults.after_failure() == Faults()
    assert Faults(mode="fail", fail_count=-1).after_failure() == Faults(mode="fail", fail_count=-1)


def test_sim_clock_only_moves_forward():
    clock = SimClock()
    assert clock.advance(2) - datetime.now(UTC) > timedelta(hours=1, minutes=59)
    with pytest.raises(ValueError, match="advance_hours"):
        clock.advance(-1)


def test_other_subject_rows_never_match_the_subject(partner_db):
    rows = PartnerStore(partner_db).other_subject_rows({"email": ALICE, "phone": "+4930123456"}, limit=5)
    assert ids(rows) == {"order_packages": [3], "support_cases": [1]}


# --- S3 drop-box partner ----------------------------------------------------------------------


def put_request(s3: Any, bucket: str, request_id: str, request_type: str = "access", **kwargs: Any) -> None:
    payload = body(request_id, request_type, **kwargs)
    s3.put_object(Bucket=bucket, Key=f"inbox/{request_id}.json", Body=json.dumps(payload).encode())


def answer_of(s3: Any, bucket: str, request_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"outbox/{request_id}.json")["Body"].read())
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def put_control(s3: Any, bucket: str, name: str, doc: dict[str, Any]) -> None:
    s3.put_object(Bucket=bucket, Key=f"_control/{name}.json", Body=json.dumps(doc).encode())


def test_dropbox_answers_an_access_request_exactly_once(dropbox, s3, bucket):
    put_request(s3, bucket, "r-1", email=" Alice.Example@EXAMPLE.com")
    assert dropbox.poll_once() == 1
    answer = answer_of(s3, bucket, "r-1")
    assert answer["request_status"] == "completed"
    assert (answer["request_type"], answer["attempt"]) == ("access", 1)
    assert ids(answer["records"]) == ALICE_ROWS
    assert answer["affected"] == {"order_packages": 2, "support_cases": 1}
    assert dropbox.poll_once() == 0


def test_an_idle_dropbox_polls_less_and_still_answers_promptly(dropbox, s3, bucket):
    lists: list[float] = []
    dropbox._s3.meta.events.register(  # the responder's own listings
        "before-parameter-build.s3.ListObjectsV2", lambda **_: lists.append(time.monotonic())
    )
    with dropbox:
        time.sleep(1.5)  # idle: 0.05 s doubling to 0.4 s, about 6 polls, not 30
        idle_polls = len(lists) / 2  # each poll lists the control files and the inbox
        put_request(s3, bucket, "r-idle", email=ALICE)
        asked = time.monotonic()
        while answer_of(s3, bucket, "r-idle") is None and time.monotonic() - asked < 5:
            time.sleep(0.02)
        answered_after = time.monotonic() - asked
    assert 3 <= idle_polls <= 10
    assert answered_after < dropbox.poll_seconds * dropbox.IDLE_BACKOFF + 1.0


def test_dropbox_erasure_deletes_only_the_subjects_rows(dropbox, s3, bucket, partner_db):
    put_request(s3, bucket, "r-1", "erasure", email=ALICE)
    dropbox.poll_once()
    assert answer_of(s3, bucket, "r-1")["affected"] == {"order_packages": 2, "support_cases": 1}
    assert table_ids(partner_db) == {"order_packages": [2, 3], "support_cases": [1, 3]}


def test_dropbox_rectification_applies_the_corrections(dropbox, s3, bucket, partner_db):
    put_request(s3, bucket, "r-1", "rectification", phone="+4940999888", corrections={"phone": "+49 40 111 222"})
    dropbox.poll_once()
    assert answer_of(s3, bucket, "r-1")["affected"] == {"order_packages": 1, "support_cases": 1}
    assert [r[2] for r in rows_of(partner_db, "support_cases")] == [None, None, "+4940111222"]


@pytest.mark.parametrize(
    ("fail_count", "expected"),
    [
        pytest.param(2, ["failed", "failed", "completed"], id="fail-twice-then-succeed"),
        pytest.param(-1, ["failed", "failed", "failed"], id="always-fail"),
    ],
)
def test_dropbox_fail_mode_answers_failed_until_a_retry_succeeds(dropbox, s3, bucket, fail_count, expected):
    dropbox.faults = Faults(mode="fail", fail_count=fail_count)
    statuses = []
    for attempt in range(1, len(expected) + 1):
        put_request(s3, bucket, "r-1", email=ALICE, attempt=attempt)
        assert dropbox.poll_once() == 1
        assert dropbox.poll_once() == 0  # one answer per submitted version
        answer = answer_of(s3, bucket, "r-1")
        assert answer["attempt"] == attempt
        statuses.append(answer["request_status"])
    assert statuses == expected
    assert answer_of(s3, bucket, "r-1").get("error") == (None if fail_count > 0 else "simulated partner failure")


def test_dropbox_stall_mode_delays_the_answer(dropbox, s3, bucket):
    dropbox.faults = Faults(mode="stall", stall_seconds=0.5)
    put_request(s3, bucket, "r-1", email=ALICE)
    started = time.monotonic()
    assert dropbox.poll_once() == 1
    assert time.monotonic() - started >= 0.5


def test_dropbox_late_mode_answers_after_the_remote_clock_passes(dropbox, s3, bucket):
    dropbox.faults = Faults(mode="late", late_hours=24)
    put_request(s3, bucket, "r-1", email=ALICE)
    assert dropbox.poll_once() == 0
    put_control(s3, bucket, "clock", {"advance_hours": 23})
    assert dropbox.poll_once() == 0
    assert answer_of(s3, bucket, "r-1") is None
    put_control(s3, bucket, "clock", {"advance_hours": 25})
    assert dropbox.poll_once() == 1
    assert dropbox.clock.offset_hours == 25
    assert ids(answer_of(s3, bucket, "r-1")["records"]) == ALICE_ROWS


def test_dropbox_never_mode_never_answers(dropbox, s3, bucket):
    dropbox.faults = Faults(mode="never")
    put_request(s3, bucket, "r-1", "erasure", email=ALICE)
    dropbox.clock.advance(24 * 365)
    assert dropbox.poll_once() == 0
    assert dropbox.poll_once() == 0
    assert answer_of(s3, bucket, "r-1") is None


def test_dropbox_lie_mode_returns_another_subjects_rows(dropbox, s3, bucket):
    dropbox.faults = Faults(mode="lie")
    put_request(s3, bucket, "r-1", email=ALICE)
    dropbox.poll_once()
    records = answer_of(s3, bucket, "r-1")["records"]
    assert {normalize_email(row["email"]) for rows in records.values() for row in rows} - {ALICE}


def test_dropbox_faults_are_controlled_remotely(dropbox, s3, bucket):
    put_control(s3, bucket, "faults", {"mode": "fail", "fail_count": 1})
    put_request(s3, bucket, "r-1", email=ALICE)
    dropbox.poll_once()
    assert answer_of(s3, bucket, "r-1")["request_status"] == "failed"
    put_request(s3, bucket, "r-1", email=ALICE, attempt=2)
    dropbox.poll_once()  # the unchanged control file is not applied again
    assert answer_of(s3, bucket, "r-1")["request_status"] == "completed"
    put_control(s3, bucket, "faults", {"mode": "never"})
    put_request(s3, bucket, "r-2", email=ALICE)
    assert dropbox.poll_once() == 0
    assert dropbox.faults == Faults(mode="never")


def test_dropbox_ignores_an_invalid_control_file(dropbox, s3, bucket, caplog):
    put_control(s3, bucket, "faults", {"mode": "explode"})
    dropbox.poll_once()
    assert dropbox.faults == Faults()
    assert "valid modes" in caplog.text


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b"{not json", "Expecting property name", id="not-json"),
        pytest.param(
            json.dumps(body("r-9", email=ALICE)).encode(), "does not match the inbox file name", id="id-mismatch"
        ),
        pytest.param(json.dumps(body("r-1", "forget_me", email=ALICE)).encode(), "subject_request_type", id="bad-type"),
        pytest.param(json.dumps(body("r-1", email=ALICE, attempt=0)).encode(), "attempt", id="bad-attempt"),
    ],
)
def test_dropbox_answers_an_invalid_request_file_with_failed(dropbox, s3, bucket, raw, error):
    s3.put_object(Bucket=bucket, Key="inbox/r-1.json", Body=raw)
    assert dropbox.poll_once() == 1
    answer = answer_of(s3, bucket, "r-1")
    assert answer["request_status"] == "failed"
    assert error in answer["error"]


def test_dropbox_refuses_a_request_id_reused_for_another_subject(dropbox, s3, bucket):
    put_request(s3, bucket, "r-1", "erasure", email=ALICE)
    dropbox.poll_once()
    put_request(s3, bucket, "r-1", "erasure", email="bob@example.com", attempt=2)
    dropbox.poll_once()
    answer = answer_of(s3, bucket, "r-1")
    assert (answer["request_status"], answer["attempt"]) == ("failed", 2)
    assert "already used" in answer["error"]


def test_dropbox_background_thread_answers(dropbox, s3, bucket):
    with dropbox:
        put_request(s3, bucket, "r-1", email=ALICE)
        deadline = time.monotonic() + 5
        while answer_of(s3, bucket, "r-1") is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert answer_of(s3, bucket, "r-1")["request_status"] == "completed"


def test_dropbox_logs_carry_ids_and_counts_but_no_personal_data(dropbox, s3, bucket, caplog):
    caplog.set_level(logging.DEBUG, logger="include.demo.partners")
    put_request(s3, bucket, "r-1", email=ALICE)
    put_request(s3, bucket, "r-2", "erasure", email="bob@example.com", phone="+4930123456")
    put_request(s3, bucket, "r-3", email="not-an-email")
    assert dropbox.poll_once() == 3
    logged = partner_log(caplog)
    assert "r-1" in logged
    assert "r-2" in logged
    assert not [secret for secret in PERSONAL_DATA if secret in logged]


def test_restarted_dropbox_answers_nothing_twice(dropbox, s3, bucket, partner_db, s3_factory):
    put_request(s3, bucket, "r-1", email=ALICE)
    put_request(s3, bucket, "r-2", email=ALICE)
    dropbox.faults = Faults(mode="late", late_hours=1)
    assert dropbox.poll_once() == 0
    restarted = DropboxResponder("acme", partner_db, bucket, s3_factory)
    restarted.clock.advance(2)
    assert restarted.poll_once() == 2  # the pending requests survive the restart
    assert DropboxResponder("acme", partner_db, bucket, s3_factory).poll_once() == 0


def test_a_malformed_content_length_is_400_and_ends_the_connection(api_partner):
    import http.client
    from urllib.parse import urlsplit

    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(api_partner.url).port, timeout=5)
    conn.putrequest("POST", "/opendsr/requests")
    conn.putheader("Authorization", f"Bearer {api_partner.token}")
    conn.putheader("Content-Length", "twelve")
    conn.endheaders()
    answer = conn.getresponse()
    assert (answer.status, json.loads(answer.read())["error"]) == (400, "Content-Length is not a number")
    assert answer.will_close
    conn.close()
