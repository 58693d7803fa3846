"""The completion bridge: Overnight webhooks in, Temporal completions and signals out.

    bridge = CompletionBridge(temporal_client, webhook_secret="whsec_...")
    uvicorn.run(bridge, host="0.0.0.0", port=8090)        # or: fastapi_app.mount("/overnight", bridge)

It is a plain ASGI app that answers ``POST`` at any path. For each webhook it checks the Standard
Webhooks signature, reads the finished ``Job`` from ``data``, and then acts on the job's metadata:

- ``temporal_completion=activity``: complete the async activity (``llm_call``) with the job, or
  fail it with the job's final error. It finds the activity by workflow id, run id and activity
  id, or by ``temporal_task_token`` (base64) when the job carries one.
- ``temporal_completion=signal``: signal the workflow (``temporal_signal``, by default
  ``job_completed``) with the job.

Duplicate deliveries share one outcome: a ``webhook-id`` that was handled already, or is being
handled, is not sent to Temporal a second time. An unknown target, or one that has already
completed (Temporal's NOT_FOUND), is acknowledged with 200 and ignored. A transient Temporal
error answers 503, and Overnight delivers the webhook again later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from overnight import Job, JobState, WebhookEvent, WebhookVerificationError, verify_webhook

from ._errors import job_outcome_error
from ._types import (
    JOB_COMPLETED_SIGNAL,
    META_ACTIVITY_ID,
    META_COMPLETION,
    META_NAMESPACE,
    META_RUN_ID,
    META_SIGNAL,
    META_TASK_TOKEN,
    META_WORKFLOW_ID,
)

__all__ = ["BridgeOutcome", "CompletionBridge"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BridgeOutcome:
    """What the bridge did with one webhook (the ``outcome`` of its JSON answer)."""

    COMPLETED = "completed"
    FAILED = "failed"
    SIGNALLED = "signalled"
    DUPLICATE = "duplicate"
    NOT_FOUND = "not_found"
    """The activity or workflow is unknown or already closed: acknowledged and ignored."""
    IGNORED = "ignored"
    """Not a job event, no Temporal target, or another namespace."""
    REJECTED = "rejected"
    """The signature did not verify (400)."""
    RETRY = "retry"
    """Temporal could not be reached (503); Overnight delivers the webhook again."""


class CompletionBridge:
    """ASGI app that turns Overnight's job webhooks into Temporal completions or signals.

    ``secret`` is the tenant's ``whsec_`` secret, or several during a rotation.
    ``counts`` tallies outcomes (``BridgeOutcome``) for metrics and tests.
    """

    def __init__(self, client: Client, secret: str | Sequence[str], *, tolerance_seconds: float = 300,
                 remember: int = 100_000) -> None:
        self.client = client
        self.secrets = [secret] if isinstance(secret, str) else list(secret)
        if not self.secrets:
            raise ValueError("give the tenant's whsec_ webhook secret")
        self.tolerance_seconds = tolerance_seconds
        self.remember = remember
        self.counts: Counter[str] = Counter()
        self._done: OrderedDict[str, str] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[str]] = {}

    # -- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"error": "POST Overnight webhooks here"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, outcome = await self.handle(b"".join(chunks), headers)
        await _respond(send, status, {"outcome": outcome})

    # -- logic -------------------------------------------------------------------------
    async def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """Verify and act on one delivery; returns ``(http_status, outcome)``."""
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            event = verify_webhook(body, headers, self.secrets, tolerance_seconds=self.tolerance_seconds)
        except WebhookVerificationError as exc:
            logger.warning("refused a webhook: %s", exc.message)
            self.counts[BridgeOutcome.REJECTED] += 1
            return 400, BridgeOutcome.REJECTED
        webhook_id = headers["webhook-id"]
        if webhook_id in self._done:
            self.counts[BridgeOutcome.DUPLICATE] += 1
            return 200, BridgeOutcome.DUPLICATE
        task = self._inflight.get(webhook_id)
        if task is not None:  # the same delivery is being handled: share its outcome
            self.counts[BridgeOutcome.DUPLICATE] += 1
            outcome = await asyncio.shield(task)
            return (503 if outcome == BridgeOutcome.RETRY else 200), BridgeOutcome.DUPLICATE
        task = asyncio.ensure_future(self._dispatch(event))
        self._inflight[webhook_id] = task
        try:
            outcome = await asyncio.shield(task)
        finally:
            self._inflight.pop(webhook_id, None)
        self.counts[outcome] += 1
        if outcome == BridgeOutcome.RETRY:
            return 503, outcome
        self._done[webhook_id] = outcome
        while len(self._done) > self.remember:
            self._done.popitem(last=False)
        return 200, outcome

    async def _dispatch(self, event: WebhookEvent) -> str:
        if not event.type.startswith("job."):
            return BridgeOutcome.IGNORED
        try:
            job = Job.model_validate(event.data)
        except ValidationError:
            return BridgeOutcome.IGNORED
        meta = job.metadata
        namespace = meta.get(META_NAMESPACE)
        if namespace is not None and namespace != self.client.namespace:
            return BridgeOutcome.IGNORED
        try:
            if META_TASK_TOKEN in meta or meta.get(META_COMPLETION) == "activity":
                return await self._complete_activity(job, meta)
            if meta.get(META_COMPLETION) == "signal" and meta.get(META_WORKFLOW_ID):
                handle = self.client.get_workflow_handle(meta[META_WORKFLOW_ID], run_id=meta.get(META_RUN_ID) or None)
                await handle.signal(meta.get(META_SIGNAL) or JOB_COMPLETED_SIGNAL, job)
                return BridgeOutcome.SIGNALLED
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                logger.info("job %s: its Temporal target is gone or already closed (%s)", job.id, exc.message)
                return BridgeOutcome.NOT_FOUND
            logger.warning("job %s: Temporal error %s, asking Overnight to deliver again", job.id, exc.message)
            return BridgeOutcome.RETRY
        return BridgeOutcome.IGNORED

    async def _complete_activity(self, job: Job, meta: Mapping[str, str]) -> str:
        if META_TASK_TOKEN in meta:
            try:
                token = base64.b64decode(meta[META_TASK_TOKEN], validate=True)
            except (binascii.Error, ValueError):
                return BridgeOutcome.IGNORED
            handle = self.client.get_async_activity_handle(task_token=token)
        else:
            if not (meta.get(META_WORKFLOW_ID) and meta.get(META_ACTIVITY_ID)):
                return BridgeOutcome.IGNORED
            handle = self.client.get_async_activity_handle(
                workflow_id=meta[META_WORKFLOW_ID], run_id=meta.get(META_RUN_ID) or None,
                activity_id=meta[META_ACTIVITY_ID],
            )
        if job.state is JobState.SUCCEEDED:
            await handle.complete(job)
            return BridgeOutcome.COMPLETED
        await handle.fail(job_outcome_error(job))
        return BridgeOutcome.FAILED


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
