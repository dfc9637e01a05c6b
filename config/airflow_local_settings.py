"""Airflow local settings of Fabconnect DSR (Airflow imports this module in each of its processes).

The demo, ``make stack`` and the production image put this folder on ``PYTHONPATH`` (the image
copies the file to ``$AIRFLOW_HOME/config/``). An installation with local settings of its own
adds the lines below to its file. It overrides nothing of ``airflow.settings``: it preloads the
heavy modules of the task bodies in the processes that fork tasks (see
:mod:`include.dsr.orchestration.preload`); ``DSR_PRELOAD_MODULES=""`` turns that off.
"""

import sys

from airflow.configuration import conf

__all__: list[str] = []  # nothing here replaces a setting or policy of airflow.settings

try:
    from include.dsr.orchestration.preload import preload_for_this_process
except ImportError as exc:  # the project is not importable here: Airflow must still start
    print(f"airflow_local_settings: no preloading ({exc})", file=sys.stderr)
else:
    preload_for_this_process(conf.get("core", "executor", fallback=""))
