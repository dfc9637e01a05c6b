"""
### Right to rectification (GDPR Art. 16, 19): Airflow DAG `dsr_rectification`

Corrects the fields the data map marks `rectify`, each validated by its format (email, phone as
E.164, name, country code, postal code of the row's country). Every correction is pinned to one of
the subject's rows and checked against other people's identities before anything changes; the
platform DB is updated in one transaction; a corrected email or phone is found by the next request
while requests already open still find the subject under the old one. Every recipient that received
the field is sent the correction; the ledger records before / after as keyed hashes, never values.

**Trigger** `{"request_id": "...", "subject": {"email": "..."}, "verification": {...},
"corrections": [{"field": "accounts.email", "value": "new@example.com"},
{"field": "addresses.city", "value": "Köln", "row_id": 17}]}`.
"""

from include.dsr.orchestration.change_dags import build_rectification_dag

dag = build_rectification_dag(doc_md=__doc__, tags=["rectification", "art16"])
