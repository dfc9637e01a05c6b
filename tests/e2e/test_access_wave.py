"""A wave of access (and portability) requests in one run, with dag.test() against the demo world.

The wave goes through the same tasks and functions as a single request, set-based: one
resolution, one query per collection group and one call per partner for the whole wave, one
GX check per unit; then one package, one ledger trail and one notice per request. Each
request's package must hold exactly what the ground truth says is that person's (as the single
runs in ``test_access_portability`` do); bad lines are refused on their own; a partner that
lies fails only the requests it answered for.
"""

from __future__ import annotations

import pytest

from include import constants
from tests.e2e.conftest import run_dag
from tests.e2e.helpers import (
    HARD,
    VERIFIED,
    conf_for,
    customers_of_automated_partners,
    email_conf,
    expected_objects,
    expected_rows,
    gathered_rows,
    ledger,
    manual_partners,
    package_data,
    package_keys,
    people_without_manual_partner,
    upload_wave,
    wave_report,
)

pytestmark = pytest.mark.slow


def test_an_access_wave_answers_each_request_exactly_as_a_single_run(airflow_db, demo_world):
    s3, paths = demo_world.s3, demo_world.paths
    wave_id = "E2E-AWAVE-1"
    hard = people_without_manual_partner(paths)
    ordinary = [(k, e) for k, e, _ in customers_of_automated_partners(paths)][:15]
    members = {f"E2E-AW-{k}": k for k in hard} | {f"E2E-AW-{k}": k for k, _ in ordinary}
    lines: list = [conf_for(k, rid, with_phone=k in ("H05", "H09")) for rid, k in members.items() if k in HARD]
    lines += [email_conf(f"E2E-AW-{k}", e) for k, e in ordinary]
    bad = [
        "{not json",
        {"request_id": "E2E-AW-NOVERIFY", "subject": {"email": "someone@example.com"}},
        {**lines[0], "subject": {"email": "other.person@example.com"}},  # its request id again
        {"request_id": "E2E-AW-BADMAIL", "subject": {"email": "no-at-sign"}, "verification": VERIFIED},
    ]
    key = upload_wave(s3, wave_id, [*lines[:3], *bad, *lines[3:]])

    run = run_dag("dsr_access", {"request_id": wave_id, "wave": key})

    assert run.state == "success"
    report = wave_report(s3, wave_id)
    assert report["counts"]["accepted"] == len(members)
    assert report["counts"]["refused"] + report["counts"].get("duplicate", 0) == len(bad)
    excluded = manual_partners()
    for request_id, person_key in members.items():
        rows, objects = gathered_rows(package_data(s3, request_id))
        assert rows == expected_rows(paths, person_key, systems_excluded=excluded), person_key
        assert objects == expected_objects(paths, person_key), person_key
        row = ledger().get_request(request_id)
        assert (row.status, row.outcome) == ("completed", "data_provided"), person_key
        assert package_keys(s3, request_id) == [f"{request_id}/manifest.json", f"{request_id}/package.zip"]
        events = [e.event_type for e in ledger().events(request_id)]
        assert {"checks.passed", "package.created"} <= set(events), person_key
    assert ledger().get_request("E2E-AW-NOVERIFY") is None
    assert ledger().verify_chain().ok
    with pytest.raises(s3.exceptions.NoSuchKey):  # the wave's file (identities) goes once all closed
        s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=key)
    assert not s3.list_objects_v2(Bucket=constants.EXPORTS_BUCKET, Prefix=f"_staging/{wave_id}/").get("KeyCount")
    assert ledger().get_request("E2E-AW-BADMAIL") is None


def test_a_lying_partner_fails_only_the_requests_it_answered_for(airflow_db, demo_world, healthy_partners):
    from include.demo.partners.faults import Faults

    s3, paths = demo_world.s3, demo_world.paths
    customers = customers_of_automated_partners(paths)
    liar = "lasercut-bv"
    told = [(k, e) for k, e, partners in customers if liar in partners][:4]
    spared = [(k, e) for k, e, partners in customers if liar not in partners][:4]
    assert told, "the demo world has customers of the liar"
    assert spared, "the demo world has customers who never went to the liar"
    healthy_partners[liar].faults = Faults(mode="lie")
    wave_id = "E2E-AWAVE-LIE"
    lines = [email_conf(f"E2E-AWL-{k}", e) for k, e in [*told, *spared]]
    key = upload_wave(s3, wave_id, lines)

    run = run_dag("dsr_portability", {"request_id": wave_id, "wave": key})

    assert run.state == "failed"  # close_request names the failed requests after closing the others
    for k, _ in told:
        row = ledger().get_request(f"E2E-AWL-{k}")
        assert row.status == "failed", k
        assert liar in (row.outcome_summary or "")
        assert not package_keys(s3, f"E2E-AWL-{k}")
    for k, _ in spared:
        row = ledger().get_request(f"E2E-AWL-{k}")
        assert row.status == "completed", k
        rows, _ = gathered_rows(package_data(s3, f"E2E-AWL-{k}"))
        assert rows, k
    assert ledger().verify_chain().ok
