"""Airflow glue: the DAG factory, operators and triggers, deadline alert and callbacks, error mapping.

The only package that imports Airflow (besides ``connections``); task bodies call ``rights``.
"""
