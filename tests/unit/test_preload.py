"""Which Airflow processes preload the task bodies' heavy modules, and that a preload never stops one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from include import settings
from include.dsr.orchestration.preload import DEFAULT_MODULES, forks_tasks, modules_to_preload, preload


@pytest.mark.parametrize(
    ("argv", "executor", "expected"),
    [
        pytest.param(["airflow", "scheduler"], "LocalExecutor", True, id="LocalExecutor scheduler"),
        pytest.param(["airflow", "scheduler"], "CeleryExecutor", False, id="Celery scheduler forks no task"),
        pytest.param(["airflow", "celery", "worker", "--queues", "default"], "CeleryExecutor", True, id="worker"),
        pytest.param(["airflow", "api-server"], "LocalExecutor", False, id="api-server"),
        pytest.param(["airflow", "dag-processor"], "LocalExecutor", False, id="dag-processor"),
        pytest.param(["airflow", "triggerer"], "CeleryExecutor", False, id="triggerer"),
        pytest.param(["airflow", "celery", "flower"], "CeleryExecutor", False, id="flower"),
        pytest.param(["pytest", "tests"], "LocalExecutor", False, id="a test process"),
        pytest.param(["airflow"], "LocalExecutor", False, id="no command"),
    ],
)
def test_only_processes_that_fork_tasks_preload(argv, executor, expected):
    assert forks_tasks(argv, executor) is expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, DEFAULT_MODULES, id="default"),
        pytest.param({"DSR_PRELOAD_MODULES": ""}, (), id="turned off"),
        pytest.param({"DSR_PRELOAD_MODULES": " pandas , ,json "}, ("pandas", "json"), id="spaces and blanks"),
    ],
)
def test_modules_to_preload(environ, expected):
    assert modules_to_preload(environ) == expected


def test_a_module_that_fails_to_import_is_skipped_not_raised(caplog):
    took = preload(["json", "dsr_no_such_module_here"])
    assert set(took) == {"json"}
    assert "dsr_no_such_module_here" in caplog.text


def test_airflow_loads_the_local_settings_and_the_scheduler_would_preload():
    """The project's config/airflow_local_settings.py as Airflow imports it in a new process."""
    code = (
        "import sys; sys.argv = ['airflow', 'scheduler']\n"
        "import airflow.settings\n"  # Airflow imports the local settings itself as it starts
        "print('airflow_local_settings' in sys.modules, 'pandas' in sys.modules, 'great_expectations' in sys.modules)\n"
    )
    env = {
        "PYTHONPATH": f"{settings.PROJECT_ROOT}:{settings.PROJECT_ROOT / 'config'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "DSR_PRELOAD_MODULES": "pandas",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    assert done.stdout.split() == ["True", "True", "False"], done.stderr[-2000:]
