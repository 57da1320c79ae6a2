"""Fixtures for the stand-in's own tests: a running server, an unmodified ``replicate`` client, a raw httpx client."""

from __future__ import annotations

import pathlib
import ssl
from typing import Iterator

import httpx
import pytest
import replicate

from tests.standin import StandIn


@pytest.fixture
def standin(tmp_path: pathlib.Path) -> Iterator[StandIn]:
    """A fresh stand-in with default (few-ms) latencies."""
    with StandIn(tmp_path / "standin") as server:
        yield server


@pytest.fixture
def client(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> replicate.Client:
    """An unmodified ``replicate.Client`` configured only through ``standin.env()``."""
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    return replicate.Client()


@pytest.fixture
def raw(standin: StandIn) -> Iterator[httpx.Client]:
    """A plain httpx client trusting the stand-in's CA and sending its token (for shape/header checks)."""
    verify = ssl.create_default_context(cafile=str(standin.cert_path))
    with httpx.Client(base_url=standin.url, verify=verify, timeout=10,
                      headers={"Authorization": f"Bearer {standin.token}"}) as http:
        yield http
