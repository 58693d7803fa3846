"""Shared fixtures: a fresh SQLite store per test, a tenant and its API key."""

from __future__ import annotations

import pytest

from overnight.server.store.sqlite import SQLiteJobStore
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path, clock):
    store = SQLiteJobStore(str(tmp_path / "jobs.db"), clock=clock)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def tenant(store):
    return await store.create_tenant("acme")
