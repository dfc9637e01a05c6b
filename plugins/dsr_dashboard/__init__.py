"""The "DSR compliance" dashboard: an Airflow plugin with one FastAPI app (see ``app``).

The figures come from :mod:`include.dsr.sla.reports`; this package only serves them as
an HTML page with inline SVG charts, JSON, CSV and Prometheus text.
"""
