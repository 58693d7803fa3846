"""The dispatcher: keeps the engine full, and nothing more.

It claims only as many jobs as the engine can take in flight (``engine.capacity(model)``
minus what is running), runs them concurrently, heartbeats their leases, writes each
result (signed) or failure, and aborts jobs that are cancelled or expire while running.

    dispatcher = Dispatcher(store, engine, DispatcherConfig(worker_id="gw-1"), signer=signer)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    ...
    stop.set(); await task

Several dispatchers (in one process or many) may share a store: claims are atomic, and
every write is fenced by the attempt number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from .._models import JobError, JobTimings, Priority
from .._receipts import ReceiptSigner
from ..engine import Engine, EngineError, EngineJob, EngineResult
from .metrics import Metrics
from .store.base import ClaimedJob, JobOutcome, JobStore, LeaseLost

__all__ = ["Dispatcher", "DispatcherConfig"]

log = logging.getLogger("overnight.dispatcher")

_PRIORITY_BY_RANK = {p.rank: p for p in Priority}


@dataclass(frozen=True)
class DispatcherConfig:
    worker_id: str = "dispatcher"
    """Recorded on every attempt; make it unique per process."""
    lease_seconds: float = 30.0
    """A job whose worker stops heartbeating this long is requeued."""
    poll_interval: float = 0.5
    """Re-check for work even without a wake-up (jobs submitted by another process)."""
    sweep_interval: float = 1.0
    """How often to requeue expired leases and expire jobs past their window."""

    @property
    def heartbeat_interval(self) -> float:
        return self.lease_seconds / 3


class Dispatcher:
    """Feeds claimed jobs to an :class:`~overnight.engine.Engine`."""

    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        config: DispatcherConfig = DispatcherConfig(),
        *,
        signer: ReceiptSigner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.config = config
        self.signer = signer
        self.metrics = metrics
        self._in_flight: dict[str, tuple[ClaimedJob, asyncio.Task[None]]] = {}
        self._per_model: dict[str, int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._maybe_queued: set[str] = set(engine.models)
        """Models whose last claim came back full (or that got new work): worth claiming again."""
        self._completions: list[tuple[ClaimedJob, JobOutcome, asyncio.Future[None]]] = []
        self._completions_ready = asyncio.Event()
        self._closing = False
        events = getattr(store, "events", None)
        if events is not None:
            events.on_submitted(self._work_submitted)
            events.on_cancel(self._abort)

    def _work_submitted(self) -> None:
        self._maybe_queued.update(self.engine.models)
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then requeue what is still running."""
        background = [
            asyncio.create_task(self._heartbeat_loop(stop)),
            asyncio.create_task(self._sweep_loop(stop)),
        ]
        completer = asyncio.create_task(self._completion_loop())
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                await self.fill()
                wake_wait = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {wake_wait, stop_wait},
                    timeout=self.config.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake_wait.cancel()
                if not self._wake.is_set():  # the poll interval passed: look again
                    self._maybe_queued.update(self.engine.models)
        finally:
            stop_wait.cancel()
            for task in background:
                task.cancel()
            await self._release_in_flight(completer)

    async def fill(self) -> int:
        """Claim up to the engine's free capacity for every model; return how many started."""
        started = 0
        for model in self.engine.models:
            free = self.engine.capacity(model) - self._per_model[model]
            if free <= 0 or model not in self._maybe_queued:
                continue
            claimed_jobs = await self.store.claim(model, free, self.config.worker_id, self.config.lease_seconds)
            if len(claimed_jobs) < free:
                self._maybe_queued.discard(model)
            for claimed in claimed_jobs:
                self._per_model[model] += 1
                task = asyncio.create_task(self._run_one(claimed), name=f"job:{claimed.id}")
                self._in_flight[claimed.id] = (claimed, task)
                started += 1
        return started

    # -- one job -----------------------------------------------------------------------
    async def _run_one(self, claimed: ClaimedJob) -> None:
        try:
            await self._execute(claimed)
        finally:
            self._in_flight.pop(claimed.id, None)
            self._per_model[claimed.model] -= 1
            self._wake.set()

    async def _execute(self, claimed: ClaimedJob) -> None:
        events = getattr(self.store, "events", None)
        engine_job = EngineJob(
            id=claimed.id,
            model=claimed.model,
            request=claimed.request,
            priority=_PRIORITY_BY_RANK[claimed.priority_rank],
            attempt=claimed.attempt,
            on_text=(lambda text: events.job_text(claimed.id, text)) if events and events.wants_text(claimed.id) else None,
        )
        started = time.monotonic()
        try:
            result = await self.engine.run(engine_job)
        except EngineError as exc:
            await self._fail(claimed, JobError(code=exc.code, message=exc.message, retryable=exc.retryable))
            return
        except asyncio.CancelledError:
            raise  # cancelled or lease lost: the store already holds the final word
        except Exception as exc:  # an engine bug must not kill the dispatcher
            log.exception("engine raised for job %s", claimed.id)
            await self._fail(
                claimed, JobError(code="engine_error", message=f"{type(exc).__name__}: {exc}"[:500], retryable=True)
            )
            return
        if not result.engine_seconds:
            result.engine_seconds = time.monotonic() - started
        await self._complete(claimed, result)

    async def _complete(self, claimed: ClaimedJob, result: EngineResult) -> None:
        timings = JobTimings(
            queued_seconds=round(claimed.queued_seconds, 6),
            engine_seconds=round(claimed.engine_seconds_before + result.engine_seconds, 6),
        )
        receipt = None
        if self.signer is not None:
            receipt = self.signer.sign(
                job_id=claimed.id,
                model=claimed.model,
                request_body=claimed.request.engine_body(),
                response=result.response,
                usage=result.usage,
                timings=timings,
            ).model_dump(mode="json")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome = JobOutcome(result.response, result.usage, result.engine_seconds, receipt)
        self._completions.append((claimed, outcome, done))
        self._completions_ready.set()
        await done

    async def _completion_loop(self) -> None:
        """Group commit: every result that arrived while the last write ran goes in the next one."""
        while True:
            await self._completions_ready.wait()
            self._completions_ready.clear()
            if not self._completions:
                if self._closing:
                    return
                continue
            batch, self._completions = self._completions, []
            try:
                results = await self.store.complete_many([(c.id, c.attempt, o) for c, o, _ in batch])
            except Exception as exc:
                log.exception("writing %d results failed; their leases will expire and retry", len(batch))
                results = [exc] * len(batch)
            for (claimed, _outcome, done), result in zip(batch, results):
                if isinstance(result, LeaseLost):
                    log.info("job %s: result of attempt %d dropped, lease lost", claimed.id, claimed.attempt)
                elif not isinstance(result, Exception):
                    self._record(result.model, "succeeded", result)
                if not done.done():
                    done.set_result(None)

    async def _fail(self, claimed: ClaimedJob, error: JobError) -> None:
        try:
            job = await self.store.fail(claimed.id, claimed.attempt, error)
        except LeaseLost:
            return
        if job.state.is_terminal:
            self._record(job.model, job.state.value, job)

    def _record(self, model: str, state: str, job) -> None:  # type: ignore[no-untyped-def]
        if self.metrics is None:
            return
        total = (job.finished_at - job.created_at).total_seconds() if job.finished_at else None
        self.metrics.job_finished(
            model, state, queued=job.timings.queued_seconds, engine=job.timings.engine_seconds,
            total=total, usage=job.usage,
        )

    # -- cancellation, leases, sweeps -------------------------------------------------
    def _abort(self, job_id: str) -> None:
        """The job was cancelled or expired while running here: stop it in the engine."""
        entry = self._in_flight.get(job_id)
        if entry is None:
            return
        entry[1].cancel()
        asyncio.ensure_future(self._engine_cancel(job_id))

    async def _engine_cancel(self, job_id: str) -> None:
        try:
            await self.engine.cancel(job_id)
        except Exception:
            log.exception("engine.cancel(%s) failed", job_id)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.heartbeat_interval)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        for job_id, (claimed, _task) in list(self._in_flight.items()):
            try:
                await self.store.heartbeat(job_id, claimed.attempt, self.config.lease_seconds)
            except LeaseLost:
                self._abort(job_id)  # cancelled, expired or re-claimed elsewhere
            except Exception:
                log.exception("heartbeat failed for %s", job_id)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.store.requeue_expired_leases()
                await self.store.expire_overdue()
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(self.config.sweep_interval)

    async def _release_in_flight(self, completer: asyncio.Task[None]) -> None:
        """On shutdown: stop local work, write the results already in, requeue the rest."""
        entries = list(self._in_flight.values())
        for _claimed, task in entries:
            task.cancel()
        await asyncio.gather(*(task for _c, task in entries), return_exceptions=True)
        self._closing = True
        self._completions_ready.set()
        await completer
        for claimed, _task in entries:
            await self._engine_cancel(claimed.id)
            try:
                await self.store.fail(
                    claimed.id,
                    claimed.attempt,
                    JobError(code="worker_shutdown", message="the dispatcher stopped; retrying", retryable=True),
                )
            except LeaseLost:
                pass  # its result was written, or it was cancelled meanwhile
