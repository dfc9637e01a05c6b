"""Access and portability DAGs end to end with dag.test() against the demo world.

Every run goes through the real pieces: Airflow task runner and inline triggerer, the
platform DB (SQLite), the S3-compatible server over HTTP, partner simulators over HTTP and
S3, Great Expectations. Results are compared with the generator's ground truth.
"""

from __future__ import annotations

import io
import json

import jsonschema
import pandas as pd
import pytest

from include import constants
from tests.e2e.conftest import run_dag
from tests.e2e.helpers import (
    HARD,
    conf_for,
    expected_objects,
    expected_rows,
    gathered_rows,
    ledger,
    manual_partners,
    package_data,
    package_file,
    package_keys,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("person_key", "with_phone"),
    [
        pytest.param("H01", False, id="email with other case and spaces"),
        pytest.param("H02", False, id="near-duplicate email"),
        pytest.param("H03", False, id="same name same company 1"),
        pytest.param("H04", False, id="same name same company 2"),
        pytest.param("H05", True, id="shared company phone"),
        pytest.param("H07", False, id="unicode name"),
        pytest.param("H08", False, id="sql and shell metacharacters in email"),
        pytest.param("H09", True, id="visitor only in chatbot and sms"),
        pytest.param("H10", False, id="manufacturing partner user"),
    ],
)
def test_access_returns_exactly_the_subjects_rows_from_every_system(airflow_db, demo_world, person_key, with_phone):
    request_id = f"E2E-ACCESS-{person_key}"
    run = run_dag("dsr_access", conf_for(person_key, request_id, with_phone))
    assert run.state == "success"
    rows, objects = gathered_rows(package_data(demo_world.s3, request_id))
    assert rows == expected_rows(demo_world.paths, person_key, systems_excluded=manual_partners())
    assert objects == expected_objects(demo_world.paths, person_key)
    request = ledger().get_request(request_id)
    assert request.status == "completed"
    assert request.package_uri.startswith("http")
    assert package_keys(demo_world.s3, request_id) == [f"{request_id}/manifest.json", f"{request_id}/package.zip"]
    assert request.package_uri.split("?")[0].endswith(f"{request_id}/package.zip")


def test_access_report_names_the_recipients_and_the_complaint_right(airflow_db, demo_world):
    request_id = "E2E-REPORT-H01"
    assert run_dag("dsr_access", conf_for("H01", request_id)).state == "success"
    html = package_file(demo_world.s3, request_id, "report.html").decode()
    assert "PayFlow Payments Ltd" in html
    assert "supervisory authority" in html
    manifest = json.loads(
        demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"{request_id}/manifest.json")["Body"].read()
    )
    assert manifest["record_count_total"] == sum(r.record_count or 0 for r in ledger().system_results(request_id))


def test_portability_holds_only_provided_and_observed_data_with_a_schema(airflow_db, demo_world):
    request_id = "E2E-PORT-H01"
    assert run_dag("dsr_portability", conf_for("H01", request_id)).state == "success"
    data = package_data(demo_world.s3, request_id)
    collections = {c for system in data.values() for c in system}
    assert "pricing_features" not in collections  # inferred
    assert not collections & {"invoices", "id_documents", "suppression_list"}  # not in portability scope
    assert {"accounts", "orders", "web_logs"} <= collections
    schema = json.loads(package_file(demo_world.s3, request_id, "schema.json"))
    jsonschema.validate(data, schema)
    frame = pd.read_csv(io.BytesIO(package_file(demo_world.s3, request_id, "csv/fabconnect_app/accounts.csv")))
    assert list(frame["email"]) == [HARD["H01"].email]
    with pytest.raises(KeyError):  # the Art. 15 report is access's
        package_file(demo_world.s3, request_id, "report.html")


def test_retriggering_a_request_duplicates_nothing(airflow_db, demo_world):
    request_id = "E2E-RERUN-H07"
    assert run_dag("dsr_access", conf_for("H07", request_id)).state == "success"
    first_keys = package_keys(demo_world.s3, request_id)
    first_rows = [(r.system, r.action, r.record_count) for r in ledger().system_results(request_id)]
    assert run_dag("dsr_access", conf_for("H07", request_id)).state == "success"
    assert package_keys(demo_world.s3, request_id) == first_keys
    assert [(r.system, r.action, r.record_count) for r in ledger().system_results(request_id)] == first_rows
    assert len([r for r in ledger().list_requests() if r.request_id == request_id]) == 1
    assert ledger().verify_chain().ok


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        pytest.param({"request_id": "E2E-BAD-1", "subject": {}}, "at least one identity", id="no identity"),
        pytest.param(
            {"request_id": "E2E-BAD-3", "subject": {"email": "a@example.com"}, "received_at": "2999-01-01T00:00:00Z"},
            "in the future",
            id="received in the future",
        ),
        pytest.param(
            {"request_id": "E2E-BAD-4", "subject": {"email": "a@example.com"}, "colour": "red"},
            "unknown keys",
            id="unknown key",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_touched(airflow_db, demo_world, conf, message):
    run = run_dag("dsr_access", conf)
    assert run.state == "failed"
    assert ledger().get_request(conf["request_id"]) is None
    ti = next(t for t in run.get_task_instances() if t.task_id == "validate_request")
    assert ti.state == "failed"
    assert ti.try_number == 1


def test_what_the_params_can_say_is_refused_before_a_run_exists(airflow_db, demo_world):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="subject"):
        run_dag("dsr_access", {"request_id": "E2E-BAD-2", "subject": {"email": "not-an-email"}})
    assert ledger().get_request("E2E-BAD-2") is None


def test_request_id_reused_for_another_subject_is_refused(airflow_db, demo_world):
    assert run_dag("dsr_access", conf_for("H03", "E2E-REUSE-1")).state == "success"
    run = run_dag("dsr_access", conf_for("H04", "E2E-REUSE-1"))
    assert run.state == "failed"
    assert ledger().get_request("E2E-REUSE-1").status == "completed"  # the first request is untouched


def test_encrypted_package_opens_with_the_per_request_password(airflow_db, demo_world, monkeypatch):
    import pyzipper
    import requests

    monkeypatch.setenv("DSR_ENCRYPT_PACKAGES", "1")
    request_id = "E2E-AES-H02"
    assert run_dag("dsr_access", conf_for("H02", request_id)).state == "success"
    link = ledger().get_request(request_id).package_uri
    body = requests.get(link, timeout=10).content  # the presigned link works over HTTP
    password = demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"_keys/{request_id}.txt")["Body"].read()
    with pyzipper.AESZipFile(io.BytesIO(body)) as archive:
        archive.setpassword(password)
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["request_id"] == request_id
    assert manifest["record_count_total"] > 0


def test_subject_is_acknowledged_and_told_where_the_package_is(airflow_db, demo_world):
    from include.demo.smtp_sink import read_mail

    request_id = "E2E-MAIL-H04"
    assert run_dag("dsr_access", conf_for("H04", request_id)).state == "success"
    mails = [m for m in read_mail() if request_id in m["Subject"]]
    assert len(mails) == 2
    assert all(m["To"] == HARD["H04"].email for m in mails)
    completion = next(m for m in mails if m is not mails[0])
    body = completion.get_body(("html", "plain")).get_content()
    link = ledger().get_request(request_id).package_uri
    assert link.split("?")[0] in body.replace("&amp;", "&")
    sent = [e.payload["kind"] for e in ledger().events(request_id) if e.event_type == "notice.sent"]
    assert sent == ["acknowledgement", "completion"]
