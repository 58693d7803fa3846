"""``SQLiteJobStore``: the embedded default queue, on SQLite in WAL mode via aiosqlite.

    store = SQLiteJobStore("overnight.db", events=JobEvents())
    await store.open()            # applies migrations/NNNN_*.sql in order
    ...
    await store.close()

One writer transaction at a time (``BEGIN IMMEDIATE``), so several dispatchers, even in
other processes, can share one database file without claiming a job twice. Every status
change goes through :meth:`SQLiteJobStore._transition`, a compare-and-set on the current
state (and attempt, the fencing token).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from importlib import resources
from typing import Any, AsyncIterator, Callable, Sequence

import aiosqlite

from ..._exceptions import ConflictError, InvalidRequestError, NotFoundError
from ..._hashing import canonical_json
from ..._models import (
    Attempt,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    OpenAIBatch,
    OpenAIFile,
    Job,
    JobError,
    JobState,
    JobTimings,
    LLMCall,
    Receipt,
    Usage,
    parse_completion_window,
)
from ..._webhooks import build_event, event_body, new_message_id, new_webhook_secret
from ..events import JobEvents
from .base import (
    ClaimedJob,
    JobFilter,
    JobOutcome,
    JobStore,
    LeaseLost,
    NewJob,
    OutboxMessage,
    RetryPolicy,
    Tenant,
)

__all__ = ["SQLiteJobStore"]

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
_JOB_COLUMNS = (
    "rowid, id, tenant_id, model, state, priority_rank, request, idempotency_key, batch_id, "
    "callback_url, metadata, max_attempts, attempt, created_at, started_at, finished_at, "
    "expires_at, result, error, usage, engine_seconds, queued_seconds, receipt"
)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def _key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class SQLiteJobStore(JobStore):
    """A :class:`JobStore` on one SQLite file. Pass ``clock`` to control time in tests."""

    def __init__(
        self,
        path: str,
        *,
        events: JobEvents | None = None,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.events = events or JobEvents()
        self.retry = retry
        self.clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._after_commit: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=10000")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        async with self._write() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            cursor = await db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = (await cursor.fetchone())[0]
            folder = resources.files("overnight.server.store") / "migrations"
            for entry in sorted(folder.iterdir(), key=lambda e: e.name):
                if not entry.name.endswith(".sql"):
                    continue
                version = int(entry.name.split("_", 1)[0])
                if version <= current:
                    continue
                for statement in entry.read_text().split(";\n"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", (version, self.clock())
                )

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One immediate (writer) transaction; events publish only after COMMIT."""
        assert self._db is not None, "call open() first"
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:
                # Also on cancellation: aiosqlite runs statements in order on its thread, so
                # this ROLLBACK lands after whatever the cancelled caller had queued.
                self._after_commit.clear()
                await asyncio.shield(self._rollback())
                raise
            callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def _rollback(self) -> None:
        assert self._db is not None
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # the COMMIT went through before the cancellation was seen

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        assert self._db is not None, "call open() first"
        async with self._lock:
            yield self._db

    # -- tenants and keys ------------------------------------------------------------
    async def create_tenant(self, name: str) -> Tenant:
        async with self._write() as db:
            row = await (await db.execute("SELECT * FROM tenants WHERE name = ?", (name,))).fetchone()
            if row is None:
                tenant_id = f"ten_{uuid.uuid4().hex[:16]}"
                secrets_json = json.dumps([new_webhook_secret()])
                await db.execute(
                    "INSERT INTO tenants (id, name, webhook_secrets, created_at) VALUES (?, ?, ?, ?)",
                    (tenant_id, name, secrets_json, self.clock()),
                )
                row = await (await db.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,))).fetchone()
        return self._tenant(row)

    async def create_api_key(self, tenant_id: str) -> str:
        api_key = f"ovn_{secrets.token_urlsafe(32)}"
        async with self._write() as db:
            await db.execute(
                "INSERT INTO api_keys (key_sha256, tenant_id, prefix, created_at) VALUES (?, ?, ?, ?)",
                (_key_hash(api_key), tenant_id, api_key[:10], self.clock()),
            )
        return api_key

    async def tenant_for_key(self, api_key: str) -> Tenant | None:
        async with self._read() as db:
            row = await (
                await db.execute(
                    "SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
                    "WHERE k.key_sha256 = ? AND k.revoked_at IS NULL",
                    (_key_hash(api_key),),
                )
            ).fetchone()
        return None if row is None else self._tenant(row)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._read() as db:
            row = await (await db.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,))).fetchone()
        return None if row is None else self._tenant(row)

    async def rotate_webhook_secret(self, tenant_id: str, keep_previous: bool = True) -> Tenant:
        async with self._write() as db:
            row = await (await db.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,))).fetchone()
            if row is None:
                raise NotFoundError(f"no tenant {tenant_id}")
            current = json.loads(row["webhook_secrets"])
            rotated = [new_webhook_secret()] + (current[:1] if keep_previous else [])
            await db.execute(
                "UPDATE tenants SET webhook_secrets = ? WHERE id = ?", (json.dumps(rotated), tenant_id)
            )
        tenant = await self.get_tenant(tenant_id)
        assert tenant is not None
        return tenant

    async def set_webhook_url(self, tenant_id: str, url: str | None) -> Tenant:
        async with self._write() as db:
            await db.execute("UPDATE tenants SET webhook_url = ? WHERE id = ?", (url, tenant_id))
        tenant = await self.get_tenant(tenant_id)
        assert tenant is not None
        return tenant

    @staticmethod
    def _tenant(row: aiosqlite.Row) -> Tenant:
        return Tenant(row["id"], row["name"], tuple(json.loads(row["webhook_secrets"])), row["webhook_url"])

    # -- submission ------------------------------------------------------------------
    async def create_batch(
        self, tenant_id: str, callback_url: str | None, metadata: dict[str, str], batch_id: str | None = None
    ) -> str:
        batch_id = batch_id or f"batch_{uuid.uuid4().hex}"
        async with self._write() as db:
            await db.execute(
                "INSERT INTO batches (id, tenant_id, callback_url, metadata, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (batch_id, tenant_id, callback_url, json.dumps(metadata), self.clock()),
            )
        return batch_id

    async def submit(
        self, tenant_id: str, jobs: Sequence[NewJob]
    ) -> list[tuple[Job, bool] | ConflictError]:
        now = self.clock()
        results: list[tuple[Job, bool] | ConflictError | None] = [None] * len(jobs)
        async with self._write() as db:
            keyed = {job.idempotency_key for job in jobs if job.idempotency_key}
            existing = await self._jobs_by_key(db, tenant_id, keyed) if keyed else {}
            rows: list[tuple[Any, ...]] = []
            for index, new in enumerate(jobs):
                key = new.idempotency_key
                if key and key in existing:
                    job, sha = existing[key]
                    results[index] = (
                        (job, False)
                        if sha == new.request_sha256
                        else ConflictError(
                            f"Idempotency-Key {key!r} was already used with a different request body; "
                            "use a new key for a new request",
                            code="idempotency_conflict",
                            param="Idempotency-Key",
                        )
                    )
                    continue
                request = new.request
                job_id = f"job_{uuid.uuid4().hex}"
                expires_at = now + parse_completion_window(request.completion_window)
                row = (
                    job_id, tenant_id, request.model, JobState.QUEUED.value, request.priority.rank,
                    request.model_dump_json(exclude_none=True), new.request_sha256, key, new.batch_id,
                    request.callback_url, json.dumps(request.metadata), request.max_attempts,
                    now, now, expires_at,
                )
                rows.append(row)
                job = Job(
                    id=job_id, state=JobState.QUEUED, model=request.model, priority=request.priority,
                    request=request, metadata=request.metadata, batch_id=new.batch_id,
                    idempotency_key=key, callback_url=request.callback_url,
                    max_attempts=request.max_attempts, created_at=_dt(now), expires_at=_dt(expires_at),
                )
                results[index] = (job, True)
                if key:
                    existing[key] = (job, new.request_sha256)
            if rows:
                await db.executemany(
                    "INSERT INTO jobs (id, tenant_id, model, state, priority_rank, request, request_sha256, "
                    "idempotency_key, batch_id, callback_url, metadata, max_attempts, available_at, "
                    "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._after_commit.append(self.events.jobs_submitted)
        return results  # type: ignore[return-value]

    async def _jobs_by_key(
        self, db: aiosqlite.Connection, tenant_id: str, keys: set[str]
    ) -> dict[str, tuple[Job, str]]:
        found: dict[str, tuple[Job, str]] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cursor = await db.execute(
                f"SELECT {_JOB_COLUMNS}, request_sha256 FROM jobs "
                f"WHERE tenant_id = ? AND idempotency_key IN ({marks})",
                (tenant_id, *chunk),
            )
            rows = await cursor.fetchall()
            for job in await self._jobs_from_rows(db, rows):
                row = next(r for r in rows if r["id"] == job.id)
                found[row["idempotency_key"]] = (job, row["request_sha256"])
        return found

    # -- reading -----------------------------------------------------------------------
    async def get(self, tenant_id: str | None, job_id: str) -> Job:
        async with self._read() as db:
            return await self._get(db, tenant_id, job_id)

    async def _get(self, db: aiosqlite.Connection, tenant_id: str | None, job_id: str) -> Job:
        cursor = await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        row = await cursor.fetchone()
        if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
            raise NotFoundError(f"No job with id {job_id!r}.", code="job_not_found", param="job_id")
        return (await self._jobs_from_rows(db, [row]))[0]

    async def list(
        self, tenant_id: str, filter: JobFilter, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        clauses, params = ["tenant_id = ?"], [tenant_id]
        if filter.state is not None:
            clauses.append("state = ?")
            params.append(filter.state.value)
        if filter.model is not None:
            clauses.append("model = ?")
            params.append(filter.model)
        if filter.batch_id is not None:
            clauses.append("batch_id = ?")
            params.append(filter.batch_id)
        for key, value in filter.metadata.items():
            clauses.append("json_extract(metadata, ?) = ?")
            params.extend([f'$."{key.replace(chr(34), "")}"', value])
        async with self._read() as db:
            if cursor is not None:
                anchor = await (
                    await db.execute("SELECT rowid FROM jobs WHERE id = ? AND tenant_id = ?", (cursor, tenant_id))
                ).fetchone()
                if anchor is None:
                    raise InvalidRequestError(
                        f"cursor {cursor!r} is not a job of yours; pass the next_cursor of the previous page",
                        code="invalid_cursor",
                        param="after",
                    )
                clauses.append("rowid < ?")
                params.append(anchor[0])
            rows = await (
                await db.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} ORDER BY rowid DESC LIMIT ?",
                    (*params, limit + 1),
                )
            ).fetchall()
            jobs = await self._jobs_from_rows(db, rows[:limit])
        return jobs, (jobs[-1].id if len(rows) > limit else None)

    async def count_active(self, tenant_id: str) -> int:
        async with self._read() as db:
            row = await (
                await db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE tenant_id = ? AND state IN ('queued', 'running')", (tenant_id,)
                )
            ).fetchone()
        return row[0]

    async def count_by_state(self) -> dict[tuple[str, str], int]:
        async with self._read() as db:
            rows = await (await db.execute("SELECT model, state, COUNT(*) FROM jobs GROUP BY model, state")).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    async def _jobs_from_rows(self, db: aiosqlite.Connection, rows: Sequence[aiosqlite.Row]) -> list[Job]:
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        attempts: dict[str, list[Attempt]] = {job_id: [] for job_id in ids}
        marks = ",".join("?" * len(ids))
        cursor = await db.execute(
            f"SELECT * FROM attempts WHERE job_id IN ({marks}) ORDER BY job_id, number", ids
        )
        for a in await cursor.fetchall():
            attempts[a["job_id"]].append(
                Attempt(
                    number=a["number"], worker=a["worker"], started_at=_dt(a["started_at"]),
                    ended_at=_dt(a["ended_at"]),
                    error=JobError.model_validate_json(a["error"]) if a["error"] else None,
                )
            )
        return [self._job(row, attempts[row["id"]]) for row in rows]

    @staticmethod
    def _job(row: aiosqlite.Row, attempts: list[Attempt]) -> Job:
        request = LLMCall.model_validate_json(row["request"])
        return Job(
            id=row["id"], state=JobState(row["state"]), model=row["model"], priority=request.priority,
            request=request, metadata=json.loads(row["metadata"]), batch_id=row["batch_id"],
            idempotency_key=row["idempotency_key"], callback_url=row["callback_url"],
            max_attempts=row["max_attempts"], attempts=attempts, created_at=_dt(row["created_at"]),
            started_at=_dt(row["started_at"]), finished_at=_dt(row["finished_at"]),
            expires_at=_dt(row["expires_at"]),
            result=json.loads(row["result"]) if row["result"] else None,
            error=JobError.model_validate_json(row["error"]) if row["error"] else None,
            usage=Usage.model_validate_json(row["usage"]) if row["usage"] else None,
            timings=JobTimings(
                queued_seconds=row["queued_seconds"],
                engine_seconds=row["engine_seconds"] if row["started_at"] is not None else None,
            ),
            receipt=Receipt.model_validate_json(row["receipt"]) if row["receipt"] else None,
        )

    # -- the worker side -------------------------------------------------------------
    async def claim(self, model: str, limit: int, worker: str, lease_seconds: float) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        now = self.clock()
        lease_until = now + lease_seconds
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?, "
                "lease_expires_at = ?, started_at = COALESCE(started_at, ?), "
                "queued_seconds = COALESCE(queued_seconds, ? - created_at) "
                "WHERE rowid IN (SELECT rowid FROM jobs WHERE state = 'queued' AND model = ? "
                "AND available_at <= ? AND expires_at > ? ORDER BY priority_rank DESC, rowid LIMIT ?) "
                "RETURNING rowid, id, tenant_id, model, request, priority_rank, attempt, queued_seconds, engine_seconds",
                (worker, lease_until, now, now, model, now, now, limit),
            )
            rows = sorted(await cursor.fetchall(), key=lambda r: (-r["priority_rank"], r["rowid"]))
            await db.executemany(
                "INSERT INTO attempts (job_id, number, worker, started_at) VALUES (?, ?, ?, ?)",
                [(row["id"], row["attempt"], worker, now) for row in rows],
            )
        return [
            ClaimedJob(
                id=row["id"], tenant_id=row["tenant_id"], model=row["model"],
                request=LLMCall.model_validate_json(row["request"]), priority_rank=row["priority_rank"],
                attempt=row["attempt"], lease_expires_at=lease_until,
                queued_seconds=row["queued_seconds"], engine_seconds_before=row["engine_seconds"],
            )
            for row in rows
        ]

    async def heartbeat(self, job_id: str, attempt: int, lease_seconds: float) -> None:
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'running' AND attempt = ?",
                (self.clock() + lease_seconds, job_id, attempt),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"job {job_id} attempt {attempt} no longer holds the lease")

    async def complete(self, job_id: str, attempt: int, outcome: JobOutcome) -> Job:
        (result,) = await self.complete_many([(job_id, attempt, outcome)])
        if isinstance(result, LeaseLost):
            raise result
        return result

    async def complete_many(self, items: Sequence[tuple[str, int, JobOutcome]]) -> list[Job | LeaseLost]:
        moved: list[bool] = []
        async with self._write() as db:
            for job_id, attempt, outcome in items:
                moved.append(
                    await self._transition(
                        db, job_id, JobState.SUCCEEDED, attempt=attempt,
                        result=canonical_json(outcome.result), usage=outcome.usage.model_dump_json(),
                        receipt=canonical_json(outcome.receipt) if outcome.receipt else None,
                        engine_seconds_add=outcome.engine_seconds,
                    )
                )
            done_ids = [job_id for (job_id, _, _), ok in zip(items, moved) if ok]
            marks = ",".join("?" * len(done_ids))
            rows = await (await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", done_ids)).fetchall()
            jobs = {job.id: job for job in await self._jobs_from_rows(db, rows)}
        return [
            jobs[job_id] if ok else LeaseLost(f"job {job_id} attempt {attempt} no longer holds the lease; result dropped")
            for (job_id, attempt, _), ok in zip(items, moved)
        ]

    async def fail(self, job_id: str, attempt: int, error: JobError) -> Job:
        async with self._write() as db:
            row = await (
                await db.execute(
                    "SELECT max_attempts FROM jobs WHERE id = ? AND state = 'running' AND attempt = ?",
                    (job_id, attempt),
                )
            ).fetchone()
            if row is None:
                raise LeaseLost(f"job {job_id} attempt {attempt} no longer holds the lease")
            await self._end_attempt_or_retry(db, job_id, attempt, row["max_attempts"], error)
            return await self._get(db, None, job_id)

    async def _end_attempt_or_retry(
        self, db: aiosqlite.Connection, job_id: str, attempt: int, max_attempts: int, error: JobError
    ) -> None:
        if error.retryable and attempt < max_attempts:
            await self._transition(
                db, job_id, JobState.QUEUED, attempt=attempt, attempt_error=error,
                available_at=self.clock() + self.retry.delay(attempt),
            )
        else:
            final = error
            if error.retryable:
                final = JobError(
                    code=error.code,
                    message=f"gave up after {attempt} attempt(s): {error.message}",
                    retryable=False,
                )
            await self._transition(db, job_id, JobState.FAILED, attempt=attempt, error=final)

    async def cancel(self, tenant_id: str | None, job_id: str) -> Job:
        async with self._write() as db:
            job = await self._get(db, tenant_id, job_id)
            if job.state is JobState.CANCELLED:
                return job
            if job.state.is_terminal:
                raise ConflictError(
                    f"job {job_id} already ended {job.state.value}; only queued or running jobs can be cancelled",
                    code="job_finished",
                    param="job_id",
                )
            error = JobError(code="cancelled", message="cancelled by request", retryable=False)
            await self._transition(db, job_id, JobState.CANCELLED, error=error)
            if job.state is JobState.RUNNING:
                self._after_commit.append(lambda: self.events.job_cancelled(job_id))
            return await self._get(db, None, job_id)

    async def requeue_expired_leases(self) -> list[str]:
        async with self._write() as db:
            rows = await (
                await db.execute(
                    "SELECT id, attempt, max_attempts FROM jobs WHERE state = 'running' AND lease_expires_at < ?",
                    (self.clock(),),
                )
            ).fetchall()
            for row in rows:
                error = JobError(
                    code="lease_expired",
                    message="the worker stopped heartbeating (crashed or lost) before finishing",
                    retryable=True,
                )
                await self._end_attempt_or_retry(db, row["id"], row["attempt"], row["max_attempts"], error)
        return [row["id"] for row in rows]

    async def expire_overdue(self) -> list[str]:
        async with self._write() as db:
            rows = await (
                await db.execute(
                    "SELECT id, state FROM jobs WHERE state IN ('queued', 'running') AND expires_at <= ?",
                    (self.clock(),),
                )
            ).fetchall()
            for row in rows:
                error = JobError(
                    code="expired",
                    message="the job did not finish within its completion_window",
                    retryable=False,
                )
                await self._transition(db, row["id"], JobState.EXPIRED, error=error)
                if row["state"] == JobState.RUNNING.value:
                    job_id = row["id"]
                    self._after_commit.append(lambda job_id=job_id: self.events.job_cancelled(job_id))
        return [row["id"] for row in rows]

    # -- the one place that changes a job's state ------------------------------------
    async def _transition(
        self,
        db: aiosqlite.Connection,
        job_id: str,
        to: JobState,
        *,
        attempt: int | None = None,
        error: JobError | None = None,
        attempt_error: JobError | None = None,
        result: str | None = None,
        usage: str | None = None,
        receipt: str | None = None,
        engine_seconds_add: float = 0.0,
        available_at: float | None = None,
    ) -> bool:
        """Compare-and-set a job from an active state to ``to``; False if it was not allowed.

        With ``attempt`` the job must be running under that attempt (the fencing check).
        Ending the running attempt, the webhook outbox row and the batch completion are
        written in the same transaction.
        """
        now = self.clock()
        expected = ("running",) if attempt is not None else _ACTIVE
        terminal = to.is_terminal
        cursor = await db.execute(
            f"UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires_at = NULL, "
            f"error = COALESCE(?, error), result = COALESCE(?, result), usage = COALESCE(?, usage), "
            f"receipt = COALESCE(?, receipt), engine_seconds = engine_seconds + ?, "
            f"available_at = COALESCE(?, available_at), finished_at = CASE WHEN ? THEN ? ELSE NULL END "
            f"WHERE id = ? AND state IN ({','.join('?' * len(expected))})"
            + (" AND attempt = ?" if attempt is not None else "")
            + " RETURNING state, attempt, tenant_id, callback_url, batch_id",
            (
                to.value, error.model_dump_json() if error else None, result, usage, receipt,
                engine_seconds_add, available_at, terminal, now, job_id, *expected,
                *((attempt,) if attempt is not None else ()),
            ),
        )
        row = await cursor.fetchone()
        if row is None:
            return False
        ended_error = attempt_error or error
        await db.execute(
            "UPDATE attempts SET ended_at = ?, error = ? WHERE job_id = ? AND number = ? AND ended_at IS NULL",
            (now, ended_error.model_dump_json() if ended_error and to is not JobState.SUCCEEDED else None,
             job_id, row["attempt"]),
        )
        if to is JobState.QUEUED:
            self._after_commit.append(self.events.jobs_submitted)
            return True
        if terminal:
            if row["callback_url"]:
                job = await self._get(db, None, job_id)
                await self._enqueue_webhook(
                    db, row["tenant_id"], row["callback_url"], f"job.{to.value}", job.model_dump(mode="json")
                )
            if row["batch_id"]:
                await self._maybe_complete_batch(db, row["batch_id"])
            self._after_commit.append(lambda: self.events.job_finished(job_id))
        return True

    async def _maybe_complete_batch(self, db: aiosqlite.Connection, batch_id: str) -> None:
        active = await (
            await db.execute(
                "SELECT 1 FROM jobs WHERE batch_id = ? AND state IN ('queued', 'running') LIMIT 1", (batch_id,)
            )
        ).fetchone()
        if active is not None:
            return
        batch = await (
            await db.execute(
                "UPDATE batches SET completed_at = ? WHERE id = ? AND completed_at IS NULL "
                "RETURNING tenant_id, callback_url, metadata",
                (self.clock(), batch_id),
            )
        ).fetchone()
        self._after_commit.append(lambda: self.events.batch_finished(batch_id))
        if batch is None or not batch["callback_url"]:
            return
        counts = await (
            await db.execute("SELECT state, COUNT(*) FROM jobs WHERE batch_id = ? GROUP BY state", (batch_id,))
        ).fetchall()
        data = {
            "id": batch_id,
            "object": "batch",
            "metadata": json.loads(batch["metadata"]),
            "request_counts": {row[0]: row[1] for row in counts},
        }
        await self._enqueue_webhook(db, batch["tenant_id"], batch["callback_url"], "batch.completed", data)

    async def _enqueue_webhook(
        self, db: aiosqlite.Connection, tenant_id: str, url: str, event_type: str, data: dict[str, Any]
    ) -> None:
        now = self.clock()
        event = build_event(event_type, data, timestamp=_dt(now))
        await db.execute(
            "INSERT INTO webhook_outbox (id, tenant_id, url, event_type, payload, state, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (new_message_id(), tenant_id, url, event_type, event_body(event), now, now),
        )
        self._after_commit.append(self.events.webhook_queued)

    # -- OpenAI files and batches --------------------------------------------------------
    async def create_file(self, tenant_id: str, purpose: str, filename: str, size: int, path: str) -> OpenAIFile:
        file_id, now = f"file-{uuid.uuid4().hex}", self.clock()
        async with self._write() as db:
            await db.execute(
                "INSERT INTO files (id, tenant_id, purpose, filename, bytes, path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_id, tenant_id, purpose, filename, size, path, now),
            )
        return OpenAIFile(id=file_id, bytes=size, created_at=int(now), filename=filename, purpose=purpose)

    async def get_file(self, tenant_id: str, file_id: str) -> tuple[OpenAIFile, str]:
        """The file and the path of its content; NotFoundError for another tenant's or a deleted file."""
        async with self._read() as db:
            row = await (
                await db.execute(
                    "SELECT * FROM files WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL", (file_id, tenant_id)
                )
            ).fetchone()
        if row is None:
            raise NotFoundError(f"No file with id {file_id!r}.", code="file_not_found", param="file_id")
        return self._file(row), row["path"]

    async def list_files(self, tenant_id: str, purpose: str | None = None) -> list[OpenAIFile]:
        async with self._read() as db:
            rows = await (
                await db.execute(
                    "SELECT * FROM files WHERE tenant_id = ? AND deleted_at IS NULL AND (? IS NULL OR purpose = ?) "
                    "ORDER BY created_at DESC, rowid DESC",
                    (tenant_id, purpose, purpose),
                )
            ).fetchall()
        return [self._file(row) for row in rows]

    async def delete_file(self, tenant_id: str, file_id: str) -> str:
        """Mark deleted and return the content path for the caller to remove."""
        _, path = await self.get_file(tenant_id, file_id)
        async with self._write() as db:
            await db.execute("UPDATE files SET deleted_at = ? WHERE id = ?", (self.clock(), file_id))
        return path

    @staticmethod
    def _file(row: aiosqlite.Row) -> OpenAIFile:
        return OpenAIFile(
            id=row["id"], bytes=row["bytes"], created_at=int(row["created_at"]), filename=row["filename"], purpose=row["purpose"]
        )

    async def create_openai_batch(
        self, tenant_id: str, endpoint: str, input_file_id: str, completion_window: str, metadata: dict[str, str]
    ) -> OpenAIBatch:
        batch_id, now = f"batch_{uuid.uuid4().hex}", self.clock()
        async with self._write() as db:
            await db.execute(
                "INSERT INTO batches (id, tenant_id, callback_url, metadata, created_at) VALUES (?, ?, NULL, ?, ?)",
                (batch_id, tenant_id, json.dumps(metadata), now),
            )
            await db.execute(
                "INSERT INTO openai_batches (id, tenant_id, endpoint, input_file_id, completion_window, status, "
                "errors, metadata, created_at, expires_at) VALUES (?, ?, ?, ?, ?, 'validating', '[]', ?, ?, ?)",
                (batch_id, tenant_id, endpoint, input_file_id, completion_window, json.dumps(metadata), now,
                 now + parse_completion_window(completion_window)),
            )
        return await self.get_openai_batch(tenant_id, batch_id)

    async def get_openai_batch(self, tenant_id: str | None, batch_id: str) -> OpenAIBatch:
        async with self._read() as db:
            row = await (await db.execute("SELECT * FROM openai_batches WHERE id = ?", (batch_id,))).fetchone()
            if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
                raise NotFoundError(f"No batch with id {batch_id!r}.", code="batch_not_found", param="batch_id")
            return await self._openai_batch(db, row)

    async def list_openai_batches(self, tenant_id: str, limit: int, after: str | None) -> list[OpenAIBatch]:
        async with self._read() as db:
            rows = await (
                await db.execute(
                    "SELECT * FROM openai_batches WHERE tenant_id = ? AND (? IS NULL OR rowid < "
                    "(SELECT rowid FROM openai_batches WHERE id = ?)) ORDER BY rowid DESC LIMIT ?",
                    (tenant_id, after, after, limit),
                )
            ).fetchall()
            return [await self._openai_batch(db, row) for row in rows]

    async def open_openai_batches(self) -> list[tuple[str, OpenAIBatch]]:
        async with self._read() as db:
            rows = await (
                await db.execute(
                    "SELECT * FROM openai_batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') "
                    "ORDER BY rowid"
                )
            ).fetchall()
            return [(row["tenant_id"], await self._openai_batch(db, row)) for row in rows]

    async def set_openai_batch_status(
        self, batch_id: str, to: str, expected: Sequence[str], **fields: Any
    ) -> bool:
        """Compare-and-set the batch status (stamping ``<status>_at``), with optional fields:
        ``errors`` (list of BatchError), ``output_file_id``, ``error_file_id``."""
        sets, params = ["status = ?", f"{to}_at = COALESCE({to}_at, ?)"], [to, self.clock()]
        if "errors" in fields:
            sets.append("errors = ?")
            params.append(json.dumps([e.model_dump() for e in fields.pop("errors")]))
        for name in ("output_file_id", "error_file_id"):
            if name in fields:
                sets.append(f"{name} = ?")
                params.append(fields.pop(name))
        assert not fields, f"unknown fields {fields}"
        marks = ",".join("?" * len(expected))
        async with self._write() as db:
            cursor = await db.execute(
                f"UPDATE openai_batches SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
                (*params, batch_id, *expected),
            )
            return cursor.rowcount == 1

    async def batch_jobs(self, batch_id: str) -> list[Job]:
        """Every job of a batch, in submission order."""
        async with self._read() as db:
            rows = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE batch_id = ? ORDER BY rowid", (batch_id,))
            ).fetchall()
            return await self._jobs_from_rows(db, rows)

    async def cancel_batch_jobs(self, batch_id: str) -> int:
        """Cancel every queued or running job of a batch; finished ones keep their results."""
        async with self._write() as db:
            rows = await (
                await db.execute(
                    "SELECT id, state FROM jobs WHERE batch_id = ? AND state IN ('queued', 'running')", (batch_id,)
                )
            ).fetchall()
            error = JobError(code="batch_cancelled", message="the batch was cancelled", retryable=False)
            for row in rows:
                await self._transition(db, row["id"], JobState.CANCELLED, error=error)
                if row["state"] == JobState.RUNNING.value:
                    job_id = row["id"]
                    self._after_commit.append(lambda job_id=job_id: self.events.job_cancelled(job_id))
        return len(rows)

    async def _openai_batch(self, db: aiosqlite.Connection, row: aiosqlite.Row) -> OpenAIBatch:
        counts = dict(
            await (
                await db.execute("SELECT state, COUNT(*) FROM jobs WHERE batch_id = ? GROUP BY state", (row["id"],))
            ).fetchall()
        )
        errors = [BatchError(**e) for e in json.loads(row["errors"])]
        invalid = sum(1 for e in errors if e.line is not None)
        stamp = lambda name: int(row[name]) if row[name] is not None else None  # noqa: E731
        return OpenAIBatch(
            id=row["id"], endpoint=row["endpoint"], input_file_id=row["input_file_id"],
            completion_window=row["completion_window"], status=row["status"],
            output_file_id=row["output_file_id"], error_file_id=row["error_file_id"],
            errors=BatchErrors(data=errors) if errors else None,
            created_at=int(row["created_at"]), expires_at=stamp("expires_at"),
            in_progress_at=stamp("in_progress_at"), finalizing_at=stamp("finalizing_at"),
            completed_at=stamp("completed_at"), failed_at=stamp("failed_at"), expired_at=stamp("expired_at"),
            cancelling_at=stamp("cancelling_at"), cancelled_at=stamp("cancelled_at"),
            request_counts=BatchRequestCounts(
                total=sum(counts.values()) + invalid,
                completed=counts.get("succeeded", 0),
                failed=sum(counts.get(s, 0) for s in ("failed", "cancelled", "expired")) + invalid,
            ),
            metadata=json.loads(row["metadata"]) or None,
        )

    async def enqueue_tenant_webhook(self, tenant_id: str, event_type: str, data: dict[str, Any]) -> bool:
        """Queue an event for the tenant's registered endpoint; False when it has none."""
        async with self._write() as db:
            row = await (await db.execute("SELECT webhook_url FROM tenants WHERE id = ?", (tenant_id,))).fetchone()
            if row is None or not row["webhook_url"]:
                return False
            await self._enqueue_webhook(db, tenant_id, row["webhook_url"], event_type, data)
        return True

    # -- webhook outbox ----------------------------------------------------------------
    async def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        now = self.clock()
        async with self._write() as db:
            rows = await (
                await db.execute(
                    "UPDATE webhook_outbox SET next_attempt_at = ? WHERE id IN (SELECT id FROM webhook_outbox "
                    "WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?) "
                    "RETURNING id, tenant_id, url, event_type, payload, attempts, created_at",
                    (now + lease_seconds, now, limit),
                )
            ).fetchall()
        return [
            OutboxMessage(r["id"], r["tenant_id"], r["url"], r["event_type"], r["payload"], r["attempts"], r["created_at"])
            for r in rows
        ]

    async def mark_webhook_delivered(self, message_id: str, status_code: int) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, last_status = ?, "
                "delivered_at = ?, next_attempt_at = NULL WHERE id = ? AND state = 'pending'",
                (status_code, self.clock(), message_id),
            )

    async def reschedule_webhook(
        self, message_id: str, next_attempt_at: float | None, status_code: int | None, error: str
    ) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = ?, last_error = ?, "
                "next_attempt_at = ?, state = CASE WHEN ? IS NULL THEN 'gave_up' ELSE 'pending' END "
                "WHERE id = ? AND state = 'pending'",
                (status_code, error[:1000], next_attempt_at, next_attempt_at, message_id),
            )
