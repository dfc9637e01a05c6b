"""
### Retention enforcement (GDPR Art. 5(1)(e)): Airflow DAG `retention_enforcement`

Daily. Every personal collection of the platform DB whose data-map retention has a clock is
purged of the rows older than its period (deleted, or anonymised where the data map says so:
inactive accounts), in key-range batches of one short transaction each, children before parents.
Nothing under a legal hold (`dsr hold add`) is touched, nor a row an erasure keeps until its
`retain_until` (deleted here once that date has passed), nor a row another retained row still
points at; a restricted subject's rows are only deleted when their period ends. Objects the
deleted rows named go with every version. The product's own copies go too: lapsed packages,
staging and dry-run reports of closed requests, identities in the Airflow metadata DB.
Great Expectations checks the result; the counts reach the ledger and the compliance dashboard.

**Trigger** `{"dry_run": true}` to see per collection what would go, touching nothing.
"""

from include.dsr.orchestration.retention_dag import build_retention_dag

dag = build_retention_dag(doc_md=__doc__)
