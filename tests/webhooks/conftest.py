"""Fixtures for webhook tests: a fake clock, an in-memory outbox store and a real local receiver.

    store = FakeOutboxStore(clock)
    message_id = store.add("tenant", receiver.url, payload)
    receiver.script(500, 204)          # answers in order, then 204
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import pytest
import uvicorn

from overnight._webhooks import build_event, event_body, new_message_id, new_webhook_secret
from overnight.server.store.base import OutboxMessage


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class OutboxRow:
    message: OutboxMessage
    next_attempt_at: float | None
    delivered: bool = False
    last_status: int | None = None
    errors: list[str] = field(default_factory=list)


class FakeOutboxStore:
    """The three outbox methods of ``JobStore``, with the same semantics, in memory.

    ``claim_due_webhooks`` leases by pushing ``next_attempt_at`` forward; every recorded
    attempt (delivered or not) increments ``attempts``; ``next_attempt_at=None`` gives up.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rows: dict[str, OutboxRow] = {}
        self.delivered_ids: list[str] = []
        self.recorded = asyncio.Event()
        """Set whenever an attempt is recorded (delivered or rescheduled); tests clear it."""

    def add(self, tenant_id: str, url: str, payload: str, event_type: str = "job.succeeded") -> str:
        message = OutboxMessage(
            id=new_message_id(), tenant_id=tenant_id, url=url, event_type=event_type,
            payload=payload, attempts=0, created_at=self.clock(),
        )
        self.rows[message.id] = OutboxRow(message, next_attempt_at=self.clock())
        return message.id

    async def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        now = self.clock()
        due = sorted(
            (r for r in self.rows.values()
             if not r.delivered and r.next_attempt_at is not None and r.next_attempt_at <= now),
            key=lambda r: r.next_attempt_at or 0.0,
        )[:limit]
        for row in due:
            row.next_attempt_at = now + lease_seconds
        return [row.message for row in due]

    async def mark_webhook_delivered(self, message_id: str, status_code: int) -> None:
        row = self.rows[message_id]
        row.message = replace(row.message, attempts=row.message.attempts + 1)
        row.delivered, row.next_attempt_at, row.last_status = True, None, status_code
        self.delivered_ids.append(message_id)
        self.recorded.set()

    async def reschedule_webhook(
        self, message_id: str, next_attempt_at: float | None, status_code: int | None, error: str
    ) -> None:
        row = self.rows[message_id]
        row.message = replace(row.message, attempts=row.message.attempts + 1)
        row.next_attempt_at, row.last_status = next_attempt_at, status_code
        row.errors.append(error)
        self.recorded.set()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 (uvicorn in a thread) that records every request."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/hook?token=s3cret"
        self.requests: list[Received] = []
        self._answers: deque[tuple[int, dict[str, str]]] = deque()

    def script(self, *answers: int | tuple[int, dict[str, str]]) -> None:
        for answer in answers:
            self._answers.append(answer if isinstance(answer, tuple) else (answer, {}))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body))
        status, extra = self._answers.popleft() if self._answers else (204, {})
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
        })
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeOutboxStore:
    return FakeOutboxStore(clock)


@pytest.fixture
def secret() -> str:
    return new_webhook_secret()


@pytest.fixture
def payload() -> str:
    return event_body(build_event("job.succeeded", {"job": {"id": "job_1", "state": "succeeded"}}))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # The socket listens before the server thread starts, so a request sent at once
    # waits in the accept backlog: no readiness polling needed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = Receiver(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
