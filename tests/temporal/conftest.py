"""Fixtures for the Temporal suites: one Temporal dev server and one fake-engine Overnight
server per session. The real-engine server is ``real_server`` from ``tests/conftest.py``.

Tests that hold these session fixtures run on the session's event loop
(``pytestmark = pytest.mark.asyncio(loop_scope="session")``).
"""

from __future__ import annotations

import gc

import pytest
import pytest_asyncio

from tests.live import OvernightProcess

from .helpers import start_temporal


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal():
    """A ``WorkflowEnvironment`` on a real dev server; ``temporal.client`` uses pydantic payloads."""
    env = await start_temporal()
    try:
        yield env
    finally:
        await env.shutdown()
        # Drop the Rust-side server handle now, not during interpreter shutdown: its threads
        # can crash a finalizing interpreter (temporalio/sdk-python#300).
        del env
        gc.collect()


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory):
    """``overnight serve`` on the deterministic ``EchoEngine`` (capacity 16; "hang" runs until cancelled)."""
    with OvernightProcess(tmp_path_factory.mktemp("temporal-fake")) as server:
        yield server
