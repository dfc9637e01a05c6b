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


def test_a_module_that_fails_to_import_is_skipped_not_raised(capsys):
    took = preload(["json", "dsr_no_such_module_here"])
    assert set(took) == {"json"}
    assert "dsr_no_such_module_here" in capsys.readouterr().err


CHECK = (
    "import sys; sys.argv = ['airflow', {command!r}]\n"
    "import airflow.settings\n"  # Airflow imports the local settings itself as it starts
    "print(*('airflow_local_settings' in sys.modules, *(m in sys.modules for m in {modules!r})))\n"
)


@pytest.mark.parametrize(
    ("command", "preload_env", "expected"),
    [
        pytest.param("scheduler", None, ["True", "True", "True"], id="default list, scheduler"),
        pytest.param("scheduler", "", ["True", "False", "False"], id="turned off"),
        pytest.param("api-server", None, ["True", "False", "False"], id="api-server loads nothing extra"),
    ],
)
def test_airflow_loads_the_local_settings_and_preloads_where_tasks_fork(tmp_path, command, preload_env, expected):
    """The project's config/airflow_local_settings.py as Airflow imports it in a new process."""
    env = {
        "PYTHONPATH": f"{settings.PROJECT_ROOT}:{settings.PROJECT_ROOT / 'config'}",
        "AIRFLOW_HOME": str(tmp_path),
        "HOME": str(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "PATH": "/usr/bin:/bin",
    }
    if preload_env is not None:
        env["DSR_PRELOAD_MODULES"] = preload_env
    code = CHECK.format(command=command, modules=("great_expectations", "pandas"))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=180
    )
    assert done.stdout.split() == expected, done.stderr[-2000:]


def test_the_local_settings_never_stop_airflow_when_the_project_is_not_importable(monkeypatch, capsys):
    import runpy

    monkeypatch.setitem(sys.modules, "include.dsr.orchestration.preload", None)  # import raises ImportError
    namespace = runpy.run_path(str(settings.PROJECT_ROOT / "config" / "airflow_local_settings.py"))
    assert namespace["__all__"] == []  # overrides nothing of airflow.settings
    assert "no preloading" in capsys.readouterr().err


def test_the_s3_model_is_loaded_into_the_default_session_the_clients_are_made_from(monkeypatch):
    import boto3

    from include.dsr.orchestration import preload

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert preload.warm_s3_model() is not None
    loader = boto3.DEFAULT_SESSION._session.get_component("data_loader")
    assert any("s3" in str(key) for key in getattr(loader, "_cache", {}))  # the model is cached in it
