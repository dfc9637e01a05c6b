"""``dsr wave``: lines checked before anything leaves, the file on a real moto S3 server, one run
triggered on the fake of Airflow's API (the real api-server path is the wave e2e test's REST conf).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from include import constants
from include.dsr.cli.app import main
from tests.unit.cli_samples import FakeAirflow, serving_fake_airflow

BUCKET = constants.EXPORTS_BUCKET
VERIFIED = {"method": "logged_in_session", "verified_at": "2026-11-25T09:00:00Z"}
IDENTITIES = ("wave.one@example.com", "wave.two@example.com", "zoë.wave@example.com", "+4915112345678")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug.setLevel(level)


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{constants.CONN_S3.upper()}", json.dumps(conn))
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAirflow]:
    with serving_fake_airflow(monkeypatch, "dsr_erasure") as server:
        yield server


@pytest.fixture
def dsr(capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        for identity in IDENTITIES:
            assert identity not in out + err
        return code, out, err

    return run


def _line(request_id: str, email: str, **extra: Any) -> str:
    conf = {"request_id": request_id, "subject": {"email": email}, "verification": VERIFIED, **extra}
    return json.dumps(conf, ensure_ascii=False)


def _wave_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _keys(s3: Any) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _triggers(airflow: FakeAirflow) -> list[dict]:
    return [body for method, path, body in airflow.calls if method == "POST" and path.endswith("/dagRuns")]


def test_wave_uploads_the_file_as_is_and_triggers_one_run_without_identities(
    s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path
) -> None:
    path = _wave_file(
        tmp_path,
        [
            _line("DSR-W-1", IDENTITIES[0]),
            "",  # blank lines are skipped, as the run skips them
            _line("DSR-W-2", IDENTITIES[1]),
            _line("DSR-W-3", IDENTITIES[2], jurisdiction="CCPA"),
        ],
    )
    code, out, err = dsr("wave", "erasure", str(path), "--wave-id", "WAVE-2026-11-25")
    assert code == 0, err
    key = "_waves/WAVE-2026-11-25.jsonl"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == path.read_bytes()
    [trigger] = _triggers(airflow)
    assert trigger["conf"] == {"request_id": "WAVE-2026-11-25", "wave": key}  # no identity enters Airflow
    assert trigger["dag_run_id"] == "dsr__WAVE-2026-11-25__20261125T100000Z"
    assert "WAVE-2026-11-25 (erasure, 3 requests)" in out
    assert "bad lines 0" in " ".join(out.split())


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "line 2: not a JSON object"),
        ('["a", "list"]', "line 2: not a JSON object"),
        (_line("DSR-W-1", IDENTITIES[1]), "line 2 (DSR-W-1): request_id used by an earlier line"),
        (
            json.dumps({"request_id": "DSR-W-9", "subject": {"email": IDENTITIES[1]}}),
            "line 2 (DSR-W-9): no verification",
        ),
        (_line("DSR-W-8", "wave.two@@example"), "line 2:"),
        (
            json.dumps({"request_id": "DSR-W-7", "subject": {"phone": "0151 1234 5678x"}, "verification": VERIFIED}),
            "line 2:",
        ),
    ],
)
def test_a_bad_line_stops_the_upload_and_names_the_line_not_the_identity(
    s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path, bad_line: str, reason: str
) -> None:
    path = _wave_file(tmp_path, [_line("DSR-W-1", IDENTITIES[0]), bad_line, _line("DSR-W-3", IDENTITIES[2])])
    code, _, err = dsr("wave", "erasure", str(path), "--wave-id", "WAVE-BAD")
    assert code == 2
    assert reason in err
    assert "nothing uploaded" in err
    assert "wave.two@@example" not in err
    assert _keys(s3) == []
    assert _triggers(airflow) == []


def test_send_bad_lines_lets_the_run_refuse_them(s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path) -> None:
    path = _wave_file(tmp_path, [_line("DSR-W-1", IDENTITIES[0]), "{not json", _line("DSR-W-3", IDENTITIES[2])])
    code, out, err = dsr("wave", "erasure", str(path), "--wave-id", "WAVE-PARTIAL", "--send-bad-lines")
    assert code == 0, err
    assert _keys(s3) == ["_waves/WAVE-PARTIAL.jsonl"]
    assert "1 (the run refuses them)" in out
    assert len(_triggers(airflow)) == 1


def test_a_wave_id_used_before_is_refused(s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path) -> None:
    path = _wave_file(tmp_path, [_line("DSR-W-1", IDENTITIES[0])])
    assert dsr("wave", "erasure", str(path), "--wave-id", "WAVE-TWICE")[0] == 0
    code, _, err = dsr("wave", "erasure", str(path), "--wave-id", "WAVE-TWICE")
    assert code == 1
    assert "submitted before" in err
    assert len(_triggers(airflow)) == 1


def test_a_refused_trigger_leaves_no_file_behind(s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path) -> None:
    del airflow.routes[("GET", "/api/v2/dags/dsr_erasure")]  # the DAG is not deployed: 404 on trigger
    path = _wave_file(tmp_path, [_line("DSR-W-1", IDENTITIES[0])])
    code, _, err = dsr("wave", "erasure", str(path), "--wave-id", "WAVE-NO-DAG")
    assert code == 1, err
    assert _keys(s3) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wave-id", "bad id with spaces"], "request_id"),
        (["--wave-id", "WAVE-EMPTY"], "holds no request"),
    ],
)
def test_bad_wave_id_or_empty_file_is_refused_before_upload(
    s3: Any, airflow: FakeAirflow, dsr, tmp_path: Path, argv: list[str], message: str
) -> None:
    path = _wave_file(tmp_path, [""])
    code, _, err = dsr("wave", "erasure", str(path), *argv)
    assert code == 2
    assert message in err
    assert _keys(s3) == []


def test_only_rights_with_waves_are_offered(dsr, tmp_path: Path) -> None:
    code, _, err = dsr("wave", "restriction", str(_wave_file(tmp_path, [""])), "--wave-id", "W-1")
    assert code == 2
    assert "invalid choice" in err
