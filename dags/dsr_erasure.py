"""
### Right to erasure (GDPR Art. 17): Airflow DAG `dsr_erasure`

Erases everything Fabconnect and its recipients hold about one data subject, except what a
legal obligation keeps. Before anything is touched, `plan_erasure` computes and records the plan
per system, collection and field: rows deleted, rows anonymised (kept because other rows point at
them: their personal fields emptied or replaced by keyed hashes), rows kept under a legal hold
(invoices 8 years, accounting records and payouts 10 years: stripped to what the law requires,
restricted, registered with `retain_until` for the retention run). Then the platform DB in one
transaction, the subject's objects (every version), the packages of earlier requests, the
suppression list; every recipient is told through its channel and, where it can be read, checked;
Great Expectations checks that only the held rows remain. The subject is told what was kept, on
which basis and until when.

**Trigger** like the other rights: `{"request_id": "...", "subject": {"email": "..."}, "verification": {...}}`.
`dry_run: true` returns the plan and touches nothing. Re-running a failed run resumes (every step is
idempotent); re-running a closed request does nothing.
"""

from include.dsr.orchestration.erasure_dag import build_erasure_dag

dag = build_erasure_dag(doc_md=__doc__, tags=["erasure", "art17"])
