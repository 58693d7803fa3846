"""In-process wake-ups: long polls, the dispatcher and the webhook sender react at once.

The store publishes after each commit. Other processes sharing the database are seen by
each poller's periodic re-check instead, so a missed wake-up costs latency, never a job.

    events = JobEvents()
    events.on_submitted(dispatcher_wake.set)
    finished = await events.wait_finished("job_123", timeout=30)   # True when it ended
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Callable

__all__ = ["JobEvents"]


class JobEvents:
    """Fan-out of "job finished", "job cancelled", "work submitted" and "webhook queued"."""

    def __init__(self) -> None:
        self._finished: dict[str, list[asyncio.Event]] = defaultdict(list)
        self._on_cancel: list[Callable[[str], None]] = []
        self._on_submitted: list[Callable[[], None]] = []
        self._on_webhook: list[Callable[[], None]] = []
        self._text: dict[str, list[asyncio.Queue[str]]] = defaultdict(list)
        self._on_batch_finished: list[Callable[[str], None]] = []

    # -- publishers (the store) ------------------------------------------------------
    def job_finished(self, job_id: str) -> None:
        for event in self._finished.pop(job_id, ()):
            event.set()

    def job_cancelled(self, job_id: str) -> None:
        for listener in self._on_cancel:
            listener(job_id)

    def job_text(self, job_id: str, text: str) -> None:
        """New output text of a running job (the engine streams it through the dispatcher)."""
        for subscriber in self._text.get(job_id, ()):
            subscriber.put_nowait(text)

    def batch_finished(self, batch_id: str) -> None:
        for listener in self._on_batch_finished:
            listener(batch_id)

    def jobs_submitted(self) -> None:
        for listener in self._on_submitted:
            listener()

    def webhook_queued(self) -> None:
        for listener in self._on_webhook:
            listener()

    # -- subscribers -------------------------------------------------------------------
    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._on_cancel.append(listener)

    def on_submitted(self, listener: Callable[[], None]) -> None:
        self._on_submitted.append(listener)

    def on_batch_finished(self, listener: Callable[[str], None]) -> None:
        self._on_batch_finished.append(listener)

    def on_webhook(self, listener: Callable[[], None]) -> None:
        self._on_webhook.append(listener)

    def subscribe_text(self, job_id: str) -> asyncio.Queue[str]:
        """Receive ``job_text`` pieces of ``job_id`` until :meth:`unsubscribe_text`."""
        subscriber: asyncio.Queue[str] = asyncio.Queue()
        self._text[job_id].append(subscriber)
        return subscriber

    def unsubscribe_text(self, job_id: str, subscriber: asyncio.Queue[str]) -> None:
        subscribers = self._text.get(job_id, [])
        if subscriber in subscribers:
            subscribers.remove(subscriber)
        if not subscribers:
            self._text.pop(job_id, None)

    def wants_text(self, job_id: str) -> bool:
        return job_id in self._text

    async def wait_finished(self, job_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``job_finished(job_id)``."""
        event = asyncio.Event()
        self._finished[job_id].append(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            waiters = self._finished.get(job_id)
            if waiters and event in waiters:
                waiters.remove(event)
                if not waiters:
                    del self._finished[job_id]
