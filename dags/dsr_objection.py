"""
### Right to object (GDPR Art. 21) and consent withdrawal (Art. 7(3)): Airflow DAG `dsr_objection`

`purposes` names what the subject objects to (data-map purpose keys). Direct marketing stops at
once, absolutely: consent off, the subject's emails on the suppression list, the registry stops the
purpose, recipients that market for Fabconnect are told. A consent-based purpose (testimonials) is
withdrawn at once (a published testimonial is unpublished). Processing on legitimate interests
(analytics, pricing features, fraud scoring) waits for ops in `weigh_objection`: stop it, or write
the compelling grounds, which the subject receives with the right to complain. Under CCPA the
request is an opt-out of sale / sharing, due within 15 business days.

**Trigger** `{"request_id": "...", "subject": {"email": "..."}, "verification": {...},
"purposes": ["marketing", "pricing"], "grounds": "optional, the subject's reasons"}`.
"""

from include.dsr.orchestration.change_dags import build_objection_dag

dag = build_objection_dag(doc_md=__doc__, tags=["objection", "art21"])
