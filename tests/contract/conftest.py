"""The contract suite's one fixture: a harness for each backend in `harnesses.BACKENDS`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.harnesses import BACKENDS, Harness


@pytest.fixture(params=sorted(BACKENDS))
def h(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with BACKENDS[request.param](tmp_path, monkeypatch) as harness:
        yield harness
