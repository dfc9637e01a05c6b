"""
### Right to data portability (GDPR Art. 20): Airflow DAG `dsr_portability`

Like access, but the package holds only data the subject provided or that was observed
from their activity (no inferred or derived data such as pricing features), as JSON and
CSV with a JSON Schema (`schema.json`), all in the one `package.zip` the link opens. With
`transmit_to` the data is also sent to the
receiving controller's endpoint and the receipt is recorded in the ledger.

**Trigger** with `{"request_id": "...", "subject": {"email": "..."}, "transmit_to": null}`.

**A wave** of requests in one run: `{"request_id": "<wave id>", "wave": "_waves/<wave id>.jsonl"}`
(one request per line, each with its verification; `bin/dsr wave portability FILE --wave-id ID`):
the same tasks, set-based, one package and notice per request. See the README, Waves.
"""

from include.dsr.orchestration.dag_factory import build_gathering_dag

dag = build_gathering_dag("portability", doc_md=__doc__, tags=["portability", "art20"])
