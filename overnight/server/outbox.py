"""Webhook delivery from the durable outbox, in its own task so it never blocks the dispatcher.

    deliverer = WebhookDeliverer(store, secrets_for_tenant, http=httpx.AsyncClient(), policy=policy)
    task = asyncio.create_task(deliverer.run(stop))   # long-running loop
    deliverer.wake()                                   # after queueing a message: send now

Each pass leases due messages (``store.claim_due_webhooks``), POSTs the stored payload bytes
with Standard Webhooks headers (``webhook-id`` = the message id, the same on every retry;
``webhook-timestamp`` = send time) and records the outcome:

- 2xx: delivered (``mark_webhook_delivered``).
- 410 Gone, or a target the SSRF policy now forbids: give up at once.
- anything else (other status, redirect, timeout, connection error): retry after
  ``schedule[attempt]`` seconds, or ``Retry-After`` when that is longer (capped at 24 h);
  after the last entry of the schedule, give up.

Redirects are never followed. The SSRF policy is re-checked at send time because DNS
answers may have changed since the job was submitted.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Awaitable, Callable, Sequence

import httpx

from .._exceptions import InvalidRequestError
from .._webhooks import sign_webhook
from .callbacks import CallbackPolicy, Resolver, redact_url, resolve_and_check
from .store.base import JobStore, OutboxMessage

__all__ = ["DEFAULT_SCHEDULE", "Outcome", "WebhookDeliverer", "parse_retry_after"]

logger = logging.getLogger("overnight.webhooks")

DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000)
"""Seconds before attempt N (Svix-like): now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h."""

MAX_RETRY_AFTER = 24 * 3600.0
USER_AGENT = "Overnight-Webhooks/1"


class Outcome:
    """The values passed to the ``metrics`` hook, one per delivery attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GAVE_UP = "gave_up"
    GONE = "gone"
    FORBIDDEN = "forbidden"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class WebhookDeliverer:
    """Delivers outbox messages; one instance per process, driven by :meth:`run`."""

    def __init__(
        self,
        store: JobStore,
        secrets_for_tenant: Callable[[str], Awaitable[Sequence[str]]],
        http: httpx.AsyncClient,
        policy: CallbackPolicy,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        concurrency: int = 16,
        timeout: float = 10.0,
        metrics: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        max_retry_after: float = MAX_RETRY_AFTER,
        resolver: Resolver | None = None,
    ) -> None:
        if not schedule:
            raise ValueError("schedule needs at least one entry (the first attempt)")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._store = store
        self._secrets_for_tenant = secrets_for_tenant
        self._http = http
        self._policy = policy
        self._schedule = tuple(float(s) for s in schedule)
        self._concurrency = concurrency
        self._timeout = timeout
        self._metrics = metrics
        self._clock = clock
        self._poll_interval = poll_interval
        self._max_retry_after = max_retry_after
        self._resolver = resolver
        self._lease_seconds = timeout + 5.0  # a send never outlives its lease: no double send
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Ask :meth:`run` to look for due messages now.

        Call it from the event loop's thread; from another thread use
        ``loop.call_soon_threadsafe(deliverer.wake)``.
        """
        self._wakeup.set()

    async def deliver_due(self) -> int:
        """One pass: lease up to ``concurrency`` due messages, send them, return how many."""
        messages = await self._store.claim_due_webhooks(self._concurrency, self._lease_seconds)
        await asyncio.gather(*(self._deliver_guarded(m) for m in messages))
        return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight sends finish before returning."""
        in_flight: set[asyncio.Task[str | None]] = set()
        stopped = asyncio.ensure_future(stop.wait())

        def finished(task: asyncio.Task[str | None]) -> None:
            in_flight.discard(task)
            self._wakeup.set()  # a slot is free

        try:
            while not stop.is_set():
                self._wakeup.clear()
                free = self._concurrency - len(in_flight)
                if free > 0:
                    try:
                        messages = await self._store.claim_due_webhooks(free, self._lease_seconds)
                    except Exception:
                        logger.exception("claiming due webhooks failed; retrying shortly")
                        messages = []
                    for message in messages:
                        task = asyncio.create_task(self._deliver_guarded(message))
                        in_flight.add(task)
                        task.add_done_callback(finished)
                    if messages and len(messages) == free:
                        continue  # maybe more are due; the loop waits only while slots are full
                woken = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait(
                    {woken, stopped}, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
        finally:
            stopped.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _deliver_guarded(self, message: OutboxMessage) -> str | None:
        try:
            return await self.deliver(message)
        except Exception:
            # Store trouble: the lease runs out and the message is claimed again later.
            logger.exception("webhook %s: recording the outcome failed", message.id)
            return None

    async def deliver(self, message: OutboxMessage) -> str:
        """Send one leased message and record the outcome; return an :class:`Outcome` value."""
        origin = redact_url(message.url)
        try:
            await resolve_and_check(message.url, self._policy, resolver=self._resolver)
        except InvalidRequestError as exc:
            if exc.code == "callback_url_unresolvable":
                return await self._failed(message, None, None, exc.message)
            await self._store.reschedule_webhook(message.id, None, None, f"{exc.code}: {exc.message}")
            logger.warning("webhook %s to %s refused by callback policy: %s", message.id, origin, exc.message)
            return self._record(Outcome.FORBIDDEN)

        body = message.payload.encode()
        try:
            secrets = list(await self._secrets_for_tenant(message.tenant_id))
            headers = sign_webhook(secrets, message.id, int(self._clock()), body)
        except Exception as exc:  # the tenant vanished, has no secret, or its secret is malformed
            return await self._failed(message, None, None, f"cannot sign: {type(exc).__name__}: {exc}"[:500])
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            # One deadline for the whole exchange (httpx's timeout is per read/write), so a
            # slow receiver cannot outlive the lease and cause a duplicate delivery.
            async with asyncio.timeout(self._timeout):
                async with self._http.stream(
                    "POST",
                    message.url,
                    content=body,
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response:  # the response body is never read
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
        except TimeoutError:
            return await self._failed(message, None, None, f"timed out after {self._timeout:g}s")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc).replace(message.url, origin)}"[:500]
            return await self._failed(message, None, None, error)

        if 200 <= status < 300:
            await self._store.mark_webhook_delivered(message.id, status)
            logger.info("webhook %s delivered to %s (%d)", message.id, origin, status)
            return self._record(Outcome.DELIVERED)
        if status == 410:
            await self._store.reschedule_webhook(
                message.id, None, status, "receiver answered 410 Gone; delivery stopped"
            )
            logger.info("webhook %s: %s answered 410 Gone; giving up", message.id, origin)
            return self._record(Outcome.GONE)
        error = f"HTTP {status}"
        if 300 <= status < 400:
            error += ": redirects are not followed; point callback_url at the final URL"
        return await self._failed(message, status, retry_after, error)

    async def _failed(
        self, message: OutboxMessage, status: int | None, retry_after: str | None, error: str
    ) -> str:
        attempt = message.attempts + 1  # attempts made, this one included
        now = self._clock()
        if attempt >= len(self._schedule):
            await self._store.reschedule_webhook(message.id, None, status, error)
            logger.warning(
                "webhook %s to %s gave up after %d attempts: %s",
                message.id, redact_url(message.url), attempt, error,
            )
            return self._record(Outcome.GAVE_UP)
        delay = self._schedule[attempt]
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, self._max_retry_after))
        await self._store.reschedule_webhook(message.id, now + delay, status, error)
        logger.info(
            "webhook %s to %s failed (%s); retry %d in %.0fs",
            message.id, redact_url(message.url), error, attempt + 1, delay,
        )
        return self._record(Outcome.RETRY)

    def _record(self, outcome: str) -> str:
        if self._metrics is not None:
            try:
                self._metrics(outcome)
            except Exception:
                logger.exception("webhook metrics hook failed")
        return outcome
