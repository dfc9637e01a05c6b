"""Every DAG imports cleanly, follows the house rules and parses fast without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from include import settings

DAGS_DIR = settings.PROJECT_ROOT / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
RIGHT_DAGS = {"dsr_access", "dsr_portability", "dsr_erasure", "dsr_restriction", "dsr_rectification", "dsr_objection"}
#: Human steps: a retry would ask ops again, or turn a rejection into a fresh prompt.
HUMAN_TASKS = {"confirm_identity", "decide_identity", "confirm_manual_partner", "weigh_objection"}
HEAVY_MODULES = ("pandas", "great_expectations", "boto3", "botocore", "sqlalchemy.orm", "jinja2.sandbox")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dag_ids(dagbag):
    assert set(dagbag.dag_ids) >= RIGHT_DAGS


@pytest.mark.parametrize("dag_id", sorted(RIGHT_DAGS))
def test_right_dags_follow_the_house_rules(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.schedule is None
    assert dag.catchup is False
    assert {"dsr", "gdpr"} <= set(dag.tags)
    assert dag.doc_md
    assert dag_id in dag.doc_md
    assert {"request_id", "subject", "received_at", "verification", "jurisdiction", "dry_run"} <= set(dag.params)
    for task in dag.tasks:
        if task.task_id in HUMAN_TASKS:
            assert task.retries == 0, f"{dag_id}.{task.task_id} is a human step and must not retry"
        else:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
        assert task.on_failure_callback, f"{dag_id}.{task.task_id} does not record failures in the ledger"


@pytest.mark.parametrize("dag_id", sorted(RIGHT_DAGS))
def test_request_id_param_rejects_an_email(dagbag, dag_id):
    """The trigger form refuses an email as request id (it would land in logs and keys)."""
    from airflow.sdk.definitions.param import ParamValidationError

    param = dagbag.dags[dag_id].params.get_param("request_id")
    param.resolve("DSR-2026-0001")
    with pytest.raises(ParamValidationError):
        param.resolve("someone@example.com")


PARSE_PROBE = """
import json, sys, time, runpy
import airflow.sdk, airflow.providers.standard.operators.hitl  # Airflow's own import cost is not ours
before = set(sys.modules)
start = time.perf_counter()
runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "new_modules": sorted(set(sys.modules) - before)}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[f.name for f in DAG_FILES])
def test_dag_file_parses_fast_without_heavy_imports(dag_file):
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(dag_file)],
        check=True,
        capture_output=True,
        text=True,
        cwd=settings.PROJECT_ROOT,
    ).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    heavy = [
        m
        for m in probe["new_modules"]
        if m.split(".")[0] in {h.split(".")[0] for h in HEAVY_MODULES}
        and any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)
    ]
    assert heavy == [], f"{dag_file.name} imports heavy modules at parse time: {heavy[:5]}"
    assert probe["seconds"] < 1.0, f"{dag_file.name} took {probe['seconds']:.2f}s to parse"


@pytest.mark.parametrize(
    ("noop_file", "dag_id"),
    [
        pytest.param("dsr_noop_shape.py", "dsr_access", id="access"),
        pytest.param("dsr_noop_erasure_shape.py", "dsr_erasure", id="erasure"),
    ],
)
def test_the_benchmark_no_op_dags_have_the_shape_of_the_dags_they_stand_for(dagbag, noop_file, dag_id):
    """bench_e2e divides a right's wall by its no-op twin's: same tasks, edges and trigger rules, or
    the ratio measures a missing hop, not the task bodies."""
    from airflow.dag_processing.dagbag import DagBag

    noop_bag = DagBag(dag_folder=str(settings.PROJECT_ROOT / "bench" / "dags" / noop_file))
    assert not noop_bag.import_errors
    (noop,) = noop_bag.dags.values()
    real = dagbag.dags[dag_id]

    def shape(dag) -> dict[str, tuple]:
        return {
            t.task_id: (sorted(t.upstream_task_ids), str(t.trigger_rule), "Mapped" in type(t).__name__)
            for t in dag.tasks
        }

    assert shape(noop) == shape(real)


def test_every_param_declares_the_cheaper_json_schema_draft(dagbag):
    """Airflow validates each Param many times per task; a Param built without ``form_param``
    would cost draft 2020-12's meta-schema check every time."""
    from include.dsr.orchestration.dag_factory import PARAM_SCHEMA_DRAFT

    def params_of(task):  # a mapped task keeps its own params among its partial arguments
        return task.params if hasattr(task, "params") else task.partial_kwargs.get("params", {})

    plain = []
    for dag_id, dag in dagbag.dags.items():
        if not dag_id.startswith(("dsr_", "retention")):
            continue
        owners = [(dag_id, dag.params)] + [(f"{dag_id}.{t.task_id}", params_of(t)) for t in dag.tasks]
        for owner, params in owners:
            for name in params:
                param = params.get_param(name) if hasattr(params, "get_param") else params[name]
                if getattr(param, "schema", {}).get("$schema") != PARAM_SCHEMA_DRAFT:
                    plain.append(f"{owner}:{name}")
    assert plain == []
