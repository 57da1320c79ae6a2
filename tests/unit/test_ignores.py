"""Every ignore says why: each noqa and type-ignore comment in the code carries a reason beside it, and so does
each exception to the type check and the lint in pyproject.toml."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRAGMA = re.compile(r"#\s*(?:noqa(?::\s*[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)?|type:\s*ignore(?:\[[^\]]*\])?)")
EXCEPTION = re.compile(r'^\s*("[A-Z]+\d*",|"[^"]+"\s*=\s*\[|ignore_missing_imports|ignore_errors|disable_error_code)')


def test_every_noqa_and_type_ignore_in_the_code_says_why() -> None:
    silent = []
    for folder in ("daemon", "tests", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                first = PRAGMA.search(line)
                if first and len(PRAGMA.sub("", line[first.start():]).strip(" #-")) < 3:
                    silent.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not silent, "an ignore without a reason:\n" + "\n".join(silent)


def test_every_exception_to_the_type_check_and_the_lint_says_why() -> None:
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    silent = [line for i, line in enumerate(lines)
              if EXCEPTION.match(line) and "#" not in line and not lines[i - 1].lstrip().startswith("#")
              and _in_exceptions(lines, i)]
    assert not silent, "an exception without a reason: " + "; ".join(silent)


def _in_exceptions(lines: list[str], i: int) -> bool:
    """Whether line i lies in ruff's ignore list, its per-file ignores, or a mypy override."""
    section = next(ln for ln in reversed(lines[:i]) if ln.startswith("["))
    if section in ("[tool.ruff.lint.per-file-ignores]", "[[tool.mypy.overrides]]"):
        return True
    opened = next((ln for ln in reversed(lines[:i]) if ln.rstrip().endswith("= [")), "")
    return section == "[tool.ruff.lint]" and opened.lstrip().startswith("ignore")
