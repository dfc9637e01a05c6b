"""Airflow Assets the product updates, for downstream DAGs to schedule on.

``RESTRICTIONS`` changes whenever the restriction registry does (a restriction applied or
lifted, an objection upheld, a consent withdrawn). A job that uses subjects' data schedules on it
(or checks ``include.dsr.processing.restrictions`` on its own schedule) so a restricted subject is
skipped from its next run on.
"""

from __future__ import annotations

from airflow.sdk import Asset

# A name only: a URI with a scheme makes Airflow load every provider's URI handlers (boto3 and
# more) at parse time.
RESTRICTIONS = Asset(name="dsr_processing_restrictions", group="privacy")
