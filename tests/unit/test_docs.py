"""The docs are tested: every command and config key in the code is in the README, and the README's install and
test commands are the ones CI runs."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from shd import cli, config, errors

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_every_command_is_documented() -> None:
    for name in cli.COMMANDS:
        assert f"`shd {name}" in README, name


def test_the_layout_has_a_line_for_every_module() -> None:
    layout = README[README.index("## Layout"):]
    package = REPO / "daemon" / "shd"
    for module in sorted(package.rglob("*.py")):
        if module.name not in ("__init__.py", "__main__.py"):
            assert re.search(rf"^\s+{re.escape(module.name)}\s", layout, re.M), module.relative_to(package)


def test_every_config_key_is_in_the_readme_table() -> None:
    for section, keys in config.RULES.items():
        for key in keys:
            assert f"`{section}.{key}`" in README or f"{section}.{key}" in README, f"{section}.{key}"
    for key in config.PRICE_RULES:
        assert f'`prices."owner/name".{key}`' in README, key


def test_the_exit_codes_agree_everywhere() -> None:
    """One table: the README's rows are the codes the cli docstring lists, the codes tests/e2e/test_exit_codes.py
    maps to their tests, and every code an error class exits with."""
    table = README[README.index("**Every command keeps its word.**"):]
    table = table[:table.index("\n\n", table.index("| code |"))]
    rows = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert rows == {0, 1, 2, 3, 4, 5, 6, 8, 130, 141}
    mapped = (REPO / "tests" / "e2e" / "test_exit_codes.py").read_text().split('"""')[1]
    assert {int(code) for code in re.findall(r"^    (\d+) ", mapped, re.M)} == rows
    doc = cli.__doc__ or ""
    listed = doc[doc.index("Exit codes"):]
    assert {int(code) for code in re.findall(r"(?:^|; |: )(\d+) ", listed.replace("\n", " "))} >= rows
    assert {e.exit_code for e in _error_classes(errors.ShdError)} <= rows


def _error_classes(cls: type[errors.ShdError]) -> list[type[errors.ShdError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _error_classes(sub))]


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    install = re.search(r"Install command:\n\n    (.+)\n", README)
    test = re.search(r"Test command:\n\n    (.+)\n", README)
    assert install and test
    lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines()
             if ln and not ln.startswith(("#", "set ", "cd "))]
    assert lines == [install.group(1), test.group(1)]
    assert test.group(1) == "scripts/test"


@pytest.mark.parametrize("failing", [None, "pytest", "mypy", "ruff"])
def test_the_test_command_runs_the_tests_then_mypy_then_ruff_and_fails_if_any_fails(
        tmp_path: Path, failing: str | None) -> None:
    """scripts/test, with a python3 on PATH that records what it is asked to run and fails one step."""
    calls = tmp_path / "calls"
    fake = tmp_path / "python3"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n[ "$2" != "{failing}" ]\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(REPO / "scripts" / "test"), "-x", "tests/unit"], env=env, capture_output=True)
    assert calls.read_text().splitlines() == ["-m pytest -x tests/unit", "-m mypy", "-m ruff check"]
    assert done.returncode == (0 if failing is None else 1)


def test_the_webhook_body_in_the_readme_has_the_payloads_shape() -> None:
    """The README's example body has the keys a webhook gets, and `cost` as it comes (the job's cost, as `shd
    status --json` has it), since the cost issue landed: not the null of before."""
    import json

    from shd import hooks

    text = README[README.index("The webhook body"):]
    example = json.loads(text[text.index("```json") + 7:text.index("```", text.index("```json") + 7)])
    cost = {"usd": 0.5, "predict_seconds": 600.0, "predictions": 120, "reused": 0, "saved_usd": 0.0}
    sent = json.loads(hooks.payload(hooks.Event("job.done", 0.0, job_id="j", state="done", source="a.mp4",
                                                output="/o/a.mp4", cost=cost, frames={"total": 1})))
    assert list(example) == list(sent)
    assert isinstance(example["cost"], dict) and sorted(example["cost"]) == sorted(cost)
    assert "(not yet)" not in README and "empty until then" not in README
