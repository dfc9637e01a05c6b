"""
### Right to restriction of processing (GDPR Art. 18): Airflow DAG `dsr_restriction`

`action: apply` enters the subject's keys (account ids, keyed hashes of emails and phones) in the
restriction registry of the platform DB for every purpose: from then on only storage continues.
Fabconnect's jobs ask the registry (view `dsr_restricted_accounts`, `include.dsr.processing.restrictions`,
Asset `dsr_processing_restrictions`) and skip the subject. Every recipient is told through its channel
(Art. 19); Great Expectations checks the registry; the subject is told.

`action: lift` first tells the subject (Art. 18(3)): the registry is cleared only once that notice
is recorded in the ledger. Then every recipient is told.

**Trigger** `{"request_id": "...", "action": "apply" | "lift", "subject": {"email": "..."}, "verification": {...}}`.
`dry_run: true` reports which records and recipients the request concerns, touching nothing.
"""

from include.dsr.orchestration.change_dags import build_restriction_dag

dag = build_restriction_dag(doc_md=__doc__, tags=["restriction", "art18"])
