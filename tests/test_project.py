"""Project-wide checks: lint, types, public surface, message handlers."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import drizzle
from drizzle.actors.dag_scheduler import DagSchedulerActor
from drizzle.actors.driver import DriverActor
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.map_output_tracker import MapOutputTrackerActor
from drizzle.wire.schema import MESSAGE_TYPES

ROOT = Path(__file__).resolve().parents[1]
ACTORS = (DriverActor, DagSchedulerActor, GroupSchedulerActor, MapOutputTrackerActor, ExecutorActor)


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.timeout(600)
def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: install the test extra")
    check = run_tool("ruff", "check", "src", "tests", "examples", "scripts")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run_tool("ruff", "format", "--check", "src", "tests", "examples", "scripts")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.timeout(600)
def test_mypy_is_clean() -> None:
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_resolves() -> None:
    for name in drizzle.__all__:
        assert getattr(drizzle, name) is not None, name


def test_every_wire_message_has_a_handler() -> None:
    handled = {cls for actor in ACTORS for cls in actor.handles}
    unhandled = {cls.__name__ for cls in MESSAGE_TYPES.values()} - {c.__name__ for c in handled}
    assert not unhandled, f"messages no actor handles: {sorted(unhandled)}"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    marker = readme.index("<!-- test-command -->")
    command = readme[marker:].splitlines()[2].strip()
    assert command == 'pip install -e ".[test]" && python -m pytest'
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
