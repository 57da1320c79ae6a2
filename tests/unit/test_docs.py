"""The docs are tested: every command and config key in the code is in the README, and the README's install and
test commands are the ones CI runs."""

import re
from pathlib import Path

from shd import cli, config

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_every_command_is_documented() -> None:
    for name in cli.COMMANDS:
        assert f"`shd {name}" in README, name


def test_every_config_key_is_in_the_readme_table() -> None:
    for section, keys in config.RULES.items():
        for key in keys:
            assert f"`{section}.{key}`" in README or f"{section}.{key}" in README, f"{section}.{key}"


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    install = re.search(r"Install command:\n\n    (.+)\n", README)
    test = re.search(r"Test command:\n\n    (.+)\n", README)
    assert install and test
    lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert lines == [install.group(1), test.group(1)]
