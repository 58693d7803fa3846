"""The OpenAI Files and Batch APIs, on the same queue as every other job.

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="ovn_...")
    file = client.files.create(file=open("requests.jsonl", "rb"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    # ... client.batches.retrieve(batch.id).status == "completed"
    output = client.files.content(batch.output_file_id).text

Each valid input line becomes a ``batch``-priority job, so a 50,000-line batch and
interactive traffic share the engines. :class:`BatchRunner` moves batches along OpenAI's
state machine (validating -> in_progress -> finalizing -> completed, or failed, expired,
cancelling -> cancelled), writes the output and error files, and sends ``batch.*`` events
to the tenant's webhook endpoint. It resumes any batch left mid-way by a crash: submission
is idempotent per ``custom_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from .._exceptions import InvalidRequestError, OvernightError
from .._hashing import derive_idempotency_key, sha256_hex
from .._models import BatchError, JobState, OpenAIBatch, Priority, batch_output_line, parse_completion_window
from .events import JobEvents
from .openai_compat import chat_call
from .store.base import JobStore, NewJob, Tenant

__all__ = ["BatchRunner", "ENDPOINT_KINDS", "openai_batch_router"]

log = logging.getLogger("overnight.batches")

ENDPOINT_KINDS = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/embeddings": "embedding"}
_SUBMIT_CHUNK = 1000
_FINAL = {"completed", "failed", "expired", "cancelled"}


def _as_json(model: Any) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def openai_batch_router(
    authenticate: Callable[..., Awaitable[Tenant]],
    store: JobStore,
    files_dir: Path,
    runner: "BatchRunner",
) -> APIRouter:
    """``/v1/files`` and ``/v1/batches``, with errors in OpenAI's shape."""
    router = APIRouter(tags=["openai batch"])

    @router.post("/v1/files")
    async def create_file(request: Request, owner: Tenant = Depends(authenticate)) -> Response:
        form = await request.form(max_files=1, max_fields=4)
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise InvalidRequestError("Only purpose='batch' files are accepted.", code="invalid_purpose", param="purpose")
        if upload is None or isinstance(upload, str):
            raise InvalidRequestError("Send the JSONL content as the multipart field 'file'.", param="file")
        files_dir.mkdir(parents=True, exist_ok=True)
        path = files_dir / f"upload-{uuid.uuid4().hex}.jsonl"
        size = 0
        with path.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
        created = await store.create_file(owner.id, "batch", upload.filename or "batch.jsonl", size, str(path))
        return _as_json(created)

    @router.get("/v1/files")
    async def list_files(owner: Tenant = Depends(authenticate), purpose: str | None = None) -> dict[str, Any]:
        files = await store.list_files(owner.id, purpose)
        return {"object": "list", "data": [f.model_dump() for f in files], "has_more": False}

    @router.get("/v1/files/{file_id}")
    async def get_file(file_id: str, owner: Tenant = Depends(authenticate)) -> Response:
        file, _path = await store.get_file(owner.id, file_id)
        return _as_json(file)

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, owner: Tenant = Depends(authenticate)) -> Response:
        file, path = await store.get_file(owner.id, file_id)
        return FileResponse(path, media_type="application/jsonl", filename=file.filename)

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, owner: Tenant = Depends(authenticate)) -> dict[str, Any]:
        path = await store.delete_file(owner.id, file_id)
        Path(path).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    @router.post("/v1/batches")
    async def create_batch(request: Request, owner: Tenant = Depends(authenticate)) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"The body is not valid JSON: {exc}", code="invalid_json", param="body")
        if not isinstance(body, dict):
            raise InvalidRequestError("The body must be a JSON object.", param="body")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINT_KINDS:
            raise InvalidRequestError(
                f"endpoint must be one of {', '.join(ENDPOINT_KINDS)}; got {endpoint!r}.",
                code="invalid_endpoint", param="endpoint",
            )
        window = str(body.get("completion_window", "24h"))
        try:
            parse_completion_window(window)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="completion_window")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise InvalidRequestError("metadata must map strings to strings.", param="metadata")
        file, _path = await store.get_file(owner.id, str(body.get("input_file_id")))
        batch = await store.create_openai_batch(owner.id, endpoint, file.id, window, metadata)
        runner.wake()
        return _as_json(batch)

    @router.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, owner: Tenant = Depends(authenticate)) -> Response:
        return _as_json(await store.get_openai_batch(owner.id, batch_id))

    @router.get("/v1/batches")
    async def list_batches(
        owner: Tenant = Depends(authenticate), limit: int = Query(default=20, ge=1, le=100), after: str | None = None
    ) -> dict[str, Any]:
        batches = await store.list_openai_batches(owner.id, limit + 1, after)
        page = batches[:limit]
        return {
            "object": "list", "data": [b.model_dump(mode="json") for b in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        }

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, owner: Tenant = Depends(authenticate)) -> Response:
        batch = await store.get_openai_batch(owner.id, batch_id)
        if batch.status in _FINAL or batch.status == "cancelling":
            if batch.status in ("cancelling", "cancelled"):
                return _as_json(batch)
            raise InvalidRequestError(f"The batch already ended {batch.status}.", code="batch_finished", param="batch_id",
                                      status_code=409)
        await store.set_openai_batch_status(batch_id, "cancelling", ("validating", "in_progress"))
        await store.cancel_batch_jobs(batch_id)
        runner.wake()
        return _as_json(await store.get_openai_batch(owner.id, batch_id))

    return router


class BatchRunner:
    """Validates new batches, submits their lines, and finalizes finished ones."""

    def __init__(
        self,
        store: JobStore,
        files_dir: Path,
        models: tuple[str, ...],
        *,
        events: JobEvents | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.files_dir = files_dir
        self.models = models
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        if events is not None:
            events.on_batch_finished(lambda _batch_id: self._wake.set())

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("batch runner step failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def step(self) -> None:
        """One pass over every open batch."""
        for tenant_id, batch in await self.store.open_openai_batches():
            counts = batch.request_counts
            if batch.status == "validating":
                await self._validate_and_submit(tenant_id, batch)
            elif batch.status == "finalizing" or counts.completed + counts.failed >= counts.total:
                await self._finalize(tenant_id, batch)

    async def _validate_and_submit(self, tenant_id: str, batch: OpenAIBatch) -> None:
        try:
            _file, path = await self.store.get_file(tenant_id, batch.input_file_id)
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OvernightError, OSError, UnicodeDecodeError) as exc:
            error = BatchError(code="invalid_file", message=f"The input file cannot be read: {exc}")
            await self.store.set_openai_batch_status(batch.id, "failed", ("validating",), errors=[error])
            return
        errors, jobs = self._parse_lines(batch, lines)
        if not jobs:
            if not errors:
                errors = [BatchError(code="empty_file", message="The input file has no requests.")]
            await self.store.set_openai_batch_status(batch.id, "failed", ("validating",), errors=errors)
            return
        for start in range(0, len(jobs), _SUBMIT_CHUNK):
            await self.store.submit(tenant_id, jobs[start : start + _SUBMIT_CHUNK])
        await self.store.set_openai_batch_status(batch.id, "in_progress", ("validating",), errors=errors)

    def _parse_lines(self, batch: OpenAIBatch, lines: list[str]) -> tuple[list[BatchError], list[NewJob]]:
        errors: list[BatchError] = []
        jobs: list[NewJob] = []
        seen: set[str] = set()
        kind = ENDPOINT_KINDS[batch.endpoint]
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise InvalidRequestError("each line must be a JSON object", param="line")
                custom_id = row.get("custom_id")
                if not isinstance(custom_id, str) or not custom_id:
                    raise InvalidRequestError("custom_id must be a non-empty string", code="missing_custom_id", param="custom_id")
                if custom_id in seen:
                    raise InvalidRequestError(f"custom_id {custom_id!r} appears more than once", code="duplicate_custom_id", param="custom_id")
                seen.add(custom_id)
                if row.get("method", "POST") != "POST" or row.get("url") != batch.endpoint:
                    raise InvalidRequestError(
                        f"each line must POST to the batch's endpoint {batch.endpoint}", code="invalid_url", param="url"
                    )
                call = chat_call(row.get("body"), kind)
                if call.model not in self.models:
                    raise InvalidRequestError(f"Unknown model {call.model!r}.", code="model_not_found", param="body.model")
                call = call.model_copy(update={
                    "priority": Priority.BATCH, "completion_window": batch.completion_window,
                    "metadata": {**call.metadata, "custom_id": custom_id},
                })
                key = derive_idempotency_key("openai-batch", batch.id, custom_id)
                jobs.append(NewJob(call, sha256_hex(call.model_dump(mode="json")), key, batch.id))
            except json.JSONDecodeError as exc:
                errors.append(BatchError(code="invalid_json", message=f"line {number} is not JSON: {exc.msg}", line=number))
            except OvernightError as exc:
                errors.append(BatchError(code=exc.code, message=exc.message, param=exc.param, line=number))
        return errors, jobs

    async def _finalize(self, tenant_id: str, batch: OpenAIBatch) -> None:
        if batch.status in ("in_progress", "cancelling"):
            await self.store.set_openai_batch_status(batch.id, "finalizing", (batch.status,))
        jobs = await self.store.batch_jobs(batch.id)
        outputs = [batch_output_line(job) for job in jobs if job.state is JobState.SUCCEEDED]
        failures = [batch_output_line(job) for job in jobs if job.state is not JobState.SUCCEEDED]
        failures += [
            {"id": f"batch_req_line_{e.line}", "custom_id": None, "response": None,
             "error": {"code": e.code, "message": e.message, "line": e.line}}
            for e in (batch.errors.data if batch.errors else []) if e.line is not None
        ]
        output_id = await self._write_file(tenant_id, batch.id, "output", outputs) if outputs else None
        error_id = await self._write_file(tenant_id, batch.id, "errors", failures) if failures else None
        if batch.status == "cancelling" or any(j.error and j.error.code == "batch_cancelled" for j in jobs):
            final = "cancelled"
        elif any(job.state is JobState.EXPIRED for job in jobs):
            final = "expired"
        else:
            final = "completed"
        if await self.store.set_openai_batch_status(
            batch.id, final, ("finalizing",), output_file_id=output_id, error_file_id=error_id
        ):
            done = await self.store.get_openai_batch(None, batch.id)
            await self.store.enqueue_tenant_webhook(tenant_id, f"batch.{final}", done.model_dump(mode="json"))

    async def _write_file(self, tenant_id: str, batch_id: str, kind: str, lines: list[dict[str, Any]]) -> str:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / f"{batch_id}_{kind}.jsonl"
        temp = path.with_suffix(".tmp")
        temp.write_text("".join(json.dumps(line) + "\n" for line in lines))
        os.replace(temp, path)
        purpose = "batch_output"
        created = await self.store.create_file(tenant_id, purpose, path.name, path.stat().st_size, str(path))
        return created.id
