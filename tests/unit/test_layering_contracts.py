"""The layering contracts in pyproject.toml ([tool.importlinter]) catch what they promise to.

Each case copies the engine to a temporary folder, adds one throwaway module that breaks
one rule, and runs ``lint-imports`` with the project's own contract file there. The real
tree is checked by ``make lint``; here the point is that each contract can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from include import settings

ROOT = settings.PROJECT_ROOT
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def engine_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layering")
    shutil.copytree(ROOT / "include", tree / "include", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_copied_tree_keeps_every_contract(engine_copy: Path) -> None:
    done = _lint(engine_copy)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "source", "broken_contract"),
    [
        pytest.param(
            "include/dsr/connectors/_throwaway.py",
            "from include.dsr.rights import intake\n",
            "The engine is layered",
            id="a connector imports a right (lower imports higher)",
        ),
        pytest.param(
            "include/dsr/ledger/_throwaway.py",
            "from include.dsr.sla import deadlines\n",
            "The engine is layered",
            id="the ledger imports the SLA layer",
        ),
        pytest.param(
            "include/dsr/evidence/_throwaway.py",
            "from include.dsr.package import build\n",
            "The engine is layered",
            id="independent siblings import each other",
        ),
        pytest.param(
            "include/dsr/core/_throwaway.py",
            "def f():\n    from airflow.sdk import Variable\n",
            "Airflow stays at the edges",
            id="core imports Airflow inside a function",
        ),
        pytest.param(
            "include/dsr/rights/_throwaway.py",
            "import dags.dsr_access\n",
            "never imports the DAG files",
            id="the engine imports a DAG file",
        ),
        pytest.param(
            "include/dsr/sla/_throwaway.py",
            "from include.demo import world\n",
            "does not depend on the demo world",
            id="the engine imports the demo world",
        ),
    ],
)
def test_a_throwaway_violation_breaks_its_contract(
    engine_copy: Path, module: str, source: str, broken_contract: str
) -> None:
    violation = engine_copy / module
    violation.write_text(source)
    try:
        done = _lint(engine_copy)
    finally:
        violation.unlink()
    assert done.returncode != 0
    broken = [line for line in done.stdout.splitlines() if " BROKEN" in line]
    assert any(broken_contract in line for line in broken), done.stdout[-3000:]
