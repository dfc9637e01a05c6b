"""The access / portability package: data files, Art. 15 report, manifest, and Art. 20 transmission.

Reads the staging area written by ``connectors``; must not import ``rights`` or Airflow.
"""
