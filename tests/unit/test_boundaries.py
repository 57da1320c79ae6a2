"""The seams stay where they are: the scheduler knows backends only by their interface, and the retry policy stays
pure (it imports nothing that does I/O, reads a clock or sleeps)."""

import ast
from pathlib import Path

SCHEDULER = Path(__file__).resolve().parents[2] / "daemon" / "shd" / "scheduler"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_scheduler_knows_backends_only_by_their_interface() -> None:
    for module in sorted(SCHEDULER.glob("*.py")):
        backends = {name for name in imports(module) if name.startswith("shd.backends")}
        assert backends <= {"shd.backends.base"}, f"{module.name} imports {backends}"
        assert "hasattr(" not in module.read_text(), f"{module.name} probes a backend for a method"


def test_the_retry_policy_imports_nothing_that_does_io() -> None:
    allowed = {"__future__", "dataclasses", "random", "typing", "shd.errors", "shd.limits", "shd.config"}
    assert imports(SCHEDULER / "retry.py") <= allowed
    tree = ast.parse((SCHEDULER / "retry.py").read_text())
    config_import = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "shd.config")
    guard = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and config_import in n.body)
    assert ast.unparse(guard.test) == "TYPE_CHECKING"  # the settings' type only: config.py reads files
