"""
### Right of access (GDPR Art. 15): Airflow DAG `dsr_access`

Gathers everything Fabconnect and its recipients hold about one data subject and hands it
over as a package: `s3://fabconnect-dsr-exports/<request_id>/package.zip` (AES-encrypted
outside the demo) with `data.json`, one CSV per collection that holds records, the uploaded
files, `report.html` with the Art. 15 information (purposes, categories, named recipients,
retention, rights, source, complaint right) and `manifest.json` (systems, counts, SHA-256
checksums), which also lies beside the zip. The link opens the zip, is presigned for at most
7 days and is recorded in the request ledger.

**Trigger** with `{"request_id": "DSR-2026-0001", "subject": {"email": "..."}}`, optionally
`received_at` (SLA clock start), `verification` (`{"method", "verified_at"}`; without it ops
confirm the identity in the `confirm_identity` task) and `jurisdiction` (`GDPR`/`CCPA`).
Bad input is refused before anything is touched. Re-triggering a `request_id` is safe.

**A wave** of requests in one run: `{"request_id": "<wave id>", "wave": "_waves/<wave id>.jsonl"}`
(one request per line, each with its verification; `bin/dsr wave access FILE --wave-id ID`):
the same tasks, set-based, one package and notice per request. See the README, Waves.
"""

from include.dsr.orchestration.dag_factory import build_gathering_dag

dag = build_gathering_dag("access", doc_md=__doc__, tags=["access", "art15"])
