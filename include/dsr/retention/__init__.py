"""Retention enforcement: delete or anonymise what the data map says is kept no longer, except
what a legal hold, a row still retained, or an erasure's legal hold keeps; and the product's own
copies (packages, staging) once they have served. Imports ledger, connectors and core; never
Airflow (the DAG is ``orchestration/retention_dag.py``).
"""
