"""``dsr``: the ops command line of Fabconnect DSR (``python -m include.dsr.cli`` or ``bin/dsr``).

Commands: ``submit``, ``status``, ``list``, ``extend``, ``ledger verify``, ``evidence``;
see :mod:`include.dsr.cli.app`. User-facing output is printed; everything else logs.
Talks to Airflow only over its REST API (:mod:`include.dsr.cli.airflow_api`); never imports
``orchestration``.
"""
