"""Environment for running Airflow on this project: embedded home, connections, auth.

``airflow_environment()`` returns the variables every Airflow process of the demo (and the
test suite) needs. Connections come from ``airflow_settings.yaml`` and are exported as
``AIRFLOW_CONN_<ID>`` JSON values, so nothing is written to the metadata DB and a variable
already set in the caller's environment (a real system) wins over the demo default.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from include import settings

AIRFLOW_HOME = Path(os.environ.get("DSR_AIRFLOW_HOME", settings.PROJECT_ROOT / ".airflow"))
SETTINGS_FILE = settings.PROJECT_ROOT / "airflow_settings.yaml"
DEMO_USER, DEMO_PASSWORD = "admin", "admin"
PARTNER_SLOTS = 8  # ${PARTNER_PORT_0..7}


def _placeholders() -> dict[str, str]:
    values = {
        "DEMO_DIR": str(settings.DEMO_DIR),
        "S3_PORT": str(settings.S3_PORT),
        "SMTP_PORT": str(settings.SMTP_PORT),
    }
    for i in range(PARTNER_SLOTS):
        values[f"PARTNER_PORT_{i}"] = str(settings.PARTNER_BASE_PORT + i)
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def demo_connections(path: Path = SETTINGS_FILE) -> dict[str, dict]:
    """conn_id -> Airflow JSON connection dict, from airflow_settings.yaml."""
    raw = yaml.safe_load(_fill(path.read_text(), _placeholders()))
    conns = {}
    for c in raw["airflow"]["connections"]:
        conn = {"conn_type": c["conn_type"]}
        for key in ("host", "port", "schema", "login", "password", "extra", "description"):
            if c.get(f"conn_{key}") not in (None, ""):
                conn[key] = c[f"conn_{key}"]
        if "port" in conn:
            conn["port"] = int(conn["port"])
        conns[c["conn_id"]] = conn
    return conns


def demo_variables(path: Path = SETTINGS_FILE) -> dict[str, str]:
    raw = yaml.safe_load(path.read_text())
    return {v["variable_name"]: str(v["variable_value"]) for v in raw["airflow"].get("variables", [])}


def airflow_environment(
    home: Path = AIRFLOW_HOME, base: dict | None = None, port: int = settings.AIRFLOW_PORT
) -> dict[str, str]:
    """Variables for an Airflow process of this project (merged over ``base``, default os.environ),
    its api-server on ``port``."""
    env = dict(os.environ if base is None else base)
    root = settings.PROJECT_ROOT
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "DSR_DEMO": "1",  # the embedded demo: its public secrets are accepted (never outside it)
            # config/: the project's airflow_local_settings (heavy modules preloaded once per worker)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), str(root / "config"), env.get("PYTHONPATH")])),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.DAGS_FOLDER),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{DEMO_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Every DAG file parsed again every 30 s (the default) cost 18% of a core on 2 cores
            # during a wave; a file that changed is parsed at once anyway (sort mode modified_time).
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    for conn_id, conn in demo_connections().items():
        env.setdefault(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    # The purge of closed requests' identities reaches the metadata DB by a connection of its own
    # (tasks may not use Airflow's session); in the demo it is the embedded SQLite file.
    env.setdefault("AIRFLOW_CONN_DSR_AIRFLOW_METADATA", metadata_connection(home))
    for name, value in demo_variables().items():
        env.setdefault(f"AIRFLOW_VAR_{name.upper()}", value)
    return env


def metadata_connection(home: Path) -> str:
    """``AIRFLOW_CONN_DSR_AIRFLOW_METADATA`` for the embedded metadata DB under ``home``."""
    return json.dumps({"conn_type": "sqlite", "host": str(home / "airflow.db")})


def write_passwords_file(home: Path = AIRFLOW_HOME) -> None:
    """Fixed demo login (admin/admin) instead of the generated one: printed by ``make demo``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({DEMO_USER: DEMO_PASSWORD}))
