"""The product's drop-box connector against the drop-box partner simulator, on a real S3 server.

A batch's files are found with one listing of their common prefix (a wave's partner refs share
the wave's id), so a file that is not there costs no read; the answers are the same as reading
every file, whichever way the exchange goes (answered, failed then retried, an answer without
our request file, listings given up for reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from include.demo.partners.faults import Faults
from include.dsr.connectors.partner_dropbox import PartnerDropboxConnector
from include.dsr.core.data_map import load_data_map
from include.dsr.identity.resolver import ResolvedSubject
from tests.support import botocore_hook

EMAILS = ["alice.example@example.com", "bob@example.com", "carol@example.com"]


def _connector(s3: Any, bucket: str) -> PartnerDropboxConnector:
    system = load_data_map().system("polymer-print-ab")
    config = {**system.channel_config, "bucket": bucket}
    return PartnerDropboxConnector(system.model_copy(update={"channel_config": config}), s3=s3)


def _subjects(wave: str, count: int) -> list[ResolvedSubject]:
    return [
        ResolvedSubject(f"{wave}-{i:04d}", emails={EMAILS[i % 3] if i < 3 else f"nobody{i}@example.com"})
        for i in range(count)
    ]


@contextmanager
def _calls(s3: Any) -> Iterator[list[str]]:
    """The S3 operations the connector's client sends inside the block."""
    seen: list[str] = []
    with botocore_hook(s3, "before-call.s3", lambda model, **_: seen.append(model.name)):
        yield seen


def _refs(refs_by_request: dict[str, list[str]]) -> list[str]:
    return [ref for refs in refs_by_request.values() for ref in refs]


def test_a_batch_costs_listings_not_reads_of_files_that_are_not_there(s3, bucket, dropbox):
    connector = _connector(s3, bucket)
    with _calls(s3) as calls:
        refs = _refs(connector.submit(_subjects("W-LIST", 20), "access"))
    assert calls.count("PutObject") == 20
    assert calls.count("GetObject") == 0  # nothing there yet: the two listings said so
    assert calls.count("ListObjectsV2") == 2
    with _calls(s3) as calls:
        assert set(connector.poll(refs).values()) == {"pending"}
    assert calls.count("GetObject") == 0
    assert dropbox.poll_once() == 20
    with _calls(s3) as calls:
        assert set(connector.poll(refs).values()) == {"completed"}
    assert calls.count("GetObject") == 20  # each answer read once; our own files only listed
    with _calls(s3) as calls:
        answers = connector.answers(refs)
    assert calls.count("GetObject") == 20
    assert answers == {ref: connector.answer(ref) for ref in refs}  # the same as reading each file
    assert answers[refs[0]]["affected"] == {"order_packages": 2, "support_cases": 1}  # Alice's rows
    with _calls(s3) as calls:
        connector.submit(_subjects("W-LIST", 20), "access")  # answered: nothing is written again
    assert "PutObject" not in calls


def test_a_failed_answer_is_retried_and_never_taken_for_the_retry_s_answer(s3, bucket, dropbox):
    connector = _connector(s3, bucket)
    dropbox.faults = Faults(mode="fail", fail_count=-1)
    refs = _refs(connector.submit(_subjects("W-FAIL", 4), "access"))
    dropbox.poll_once()
    assert set(connector.poll(refs).values()) == {"failed"}
    assert "simulated partner failure" in connector.failure(refs[0])
    connector.submit(_subjects("W-FAIL", 4), "access")  # attempt 2 of each
    assert set(connector.poll(refs).values()) == {"pending"}  # the attempt-1 failures stay in the outbox
    dropbox.faults = Faults()
    dropbox.poll_once()
    assert set(connector.poll(refs).values()) == {"completed"}
    assert {a["attempt"] for a in connector.answers(refs).values()} == {2}


def test_an_answer_without_our_request_file_is_pending(s3, bucket):
    connector = _connector(s3, bucket)
    ref = "fabconnect-access-W-STRAY-0001"
    answer = {"subject_request_id": ref, "request_status": "completed", "records": {}, "affected": {}}
    s3.put_object(Bucket=bucket, Key=f"outbox/{ref}.json", Body=json.dumps(answer).encode())
    assert connector.poll([ref]) == {ref: "pending"}
    assert connector.poll([ref, "fabconnect-access-W-STRAY-0002"])[ref] == "pending"


def test_where_a_listing_would_cost_more_each_file_is_read_and_the_answers_are_the_same(
    s3, bucket, dropbox, monkeypatch
):
    """Two requests of different waves share only ``fabconnect-access-``, under which the partner
    keeps many other answers: the listing is given up after its budget of pages."""
    from include.dsr.connectors import partner_dropbox

    connector = _connector(s3, bucket)
    refs = _refs(connector.submit([ResolvedSubject("A-1", emails={EMAILS[0]}), *_subjects("B", 1)], "access"))
    for i in range(12):  # others' answers under the refs' common prefix: 3 pages of 5 keys
        s3.put_object(Bucket=bucket, Key=f"outbox/fabconnect-access-Ax{i}.json", Body=b"{}")
    monkeypatch.setattr(partner_dropbox, "LIST_PAGE_SIZE", 5)
    monkeypatch.setattr(partner_dropbox, "LIST_PAGES_PER_READ", 1)  # 2 refs: 2 pages at most
    assert connector._present("outbox/", refs) is None  # given up: read each file
    assert connector._present("inbox/", refs) == set(refs)  # one short page: listed
    dropbox.poll_once()
    with _calls(s3) as calls:
        assert set(connector.poll(refs).values()) == {"completed"}
    assert calls.count("GetObject") == len(refs)  # each answer read; the request files were listed
    assert connector.answers(refs) == {ref: connector.answer(ref) for ref in refs}


@pytest.mark.parametrize("given_up", ["outbox/", "inbox/"])
def test_a_request_asked_and_not_answered_is_not_asked_again_when_a_listing_was_given_up(
    s3, bucket, monkeypatch, given_up
):
    """Whichever folder's listing is given up for reads, an unanswered request keeps its file
    (its attempt and time) instead of being written again as attempt 1."""
    connector = _connector(s3, bucket)
    subjects = _subjects("W-HALF", 3)
    connector.submit(subjects, "access")
    real = connector._present
    monkeypatch.setattr(connector, "_present", lambda folder, refs: None if folder == given_up else real(folder, refs))
    with _calls(s3) as calls:
        connector.submit(subjects, "access")
    assert "PutObject" not in calls
