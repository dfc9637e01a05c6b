"""The Dockerfile and docker-compose.yaml, checked where no Docker engine runs (CI, this machine):
hadolint over the Dockerfile, and the compose stack held to the same shape as ``make stack``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from include import settings
from include.demo import celery_stack
from include.demo.launcher import AIRFLOW_COMPONENTS

ROOT = settings.PROJECT_ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_copies_only_what_exists_and_installs_the_lock():
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    sources = [part for words in lines for part in words[1:-1] if not part.startswith("--")]
    assert {"requirements.txt", "include", "dags", "plugins", "pyproject.toml"} <= set(sources)
    assert all((ROOT / source).exists() for source in sources), sources
    assert "pip install --only-binary=:all: -r /tmp/requirements.txt" in (ROOT / "Dockerfile").read_text()


def test_compose_runs_every_component_of_make_stack():
    services = _compose()["services"]
    commands = {name: svc.get("command", []) for name, svc in services.items()}
    for component in AIRFLOW_COMPONENTS:
        assert commands[component][0] == component, component
    for worker in celery_stack.workers():
        assert tuple(commands[worker.name]) == worker.command()
    assert {"postgres", "redis", "airflow-init"} <= set(services)


def test_compose_airflow_services_share_the_celery_settings_of_make_stack():
    services = _compose()["services"]
    local = celery_stack.stack_environment()
    for name in (*AIRFLOW_COMPONENTS, *(w.name for w in celery_stack.workers())):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == local["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == local["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
        interval = "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"
        assert env[interval] == local[interval] == "300"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
