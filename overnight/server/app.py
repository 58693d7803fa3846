"""The HTTP API (FastAPI). ``create_app`` wires routes to a store; nothing here is global.

    app = create_app(store, ServerConfig(), signer=ReceiptSigner.load_or_create(path))
    # uvicorn.run(app) -- or drive it in tests with httpx.ASGITransport(app)

Routes: ``POST /v1/jobs``, ``POST /v1/jobs/bulk``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/wait``, ``POST /v1/jobs/{id}/cancel``, ``GET /v1/receipts/public-key``,
``GET /v1/whoami``, ``GET /v1/webhook-secrets``, ``POST /v1/webhook-secrets/rotate``,
``GET /healthz``, ``GET /metrics``. Every ``/v1`` route needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, Callable

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from pydantic import BaseModel, ValidationError

from .._exceptions import AuthenticationError, InvalidRequestError, RateLimitError
from .._hashing import derive_idempotency_key, sha256_hex
from .._models import (
    BulkItemResult,
    BulkJobsRequest,
    BulkJobsResponse,
    ErrorDetail,
    Job,
    JobPage,
    JobState,
    LLMCall,
)
from .._receipts import ReceiptSigner
from .callbacks import check_callback_url
from .config import ServerConfig
from .http_errors import BodySizeLimit, install_error_handlers, validation_error
from .metrics import Metrics
from .openai_batches import BatchRunner, openai_batch_router
from .openai_compat import openai_router
from .store.base import JobFilter, JobStore, NewJob, Tenant

__all__ = ["create_app"]


def _json(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialize a wire model once, skipping FastAPI's re-validation of the response."""
    return Response(model.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")

_RECHECK_SECONDS = 1.0
"""Long polls re-read the store this often, to see jobs finished by another process."""


def create_app(
    store: JobStore,
    config: ServerConfig,
    *,
    signer: ReceiptSigner | None = None,
    metrics: Metrics | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Build the API over ``store``. ``lifespan`` starts background work (dispatcher, webhooks)."""
    metrics = metrics or Metrics()
    app = FastAPI(title="Overnight", version="0.1.0", lifespan=lifespan)
    app.add_middleware(
        BodySizeLimit, max_bytes=config.max_body_bytes, per_path={"/v1/files": config.max_file_bytes}
    )
    install_error_handlers(app)
    app.state.store = store
    app.state.metrics = metrics

    async def tenant(authorization: str | None = Header(default=None)) -> Tenant:
        if not authorization:
            raise AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>' (create one with `overnight keys create`).",
                code="missing_api_key",
            )
        scheme, _, key = authorization.partition(" ")
        found = await store.tenant_for_key(key.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            raise AuthenticationError("The API key is not valid or was revoked.", code="invalid_api_key")
        return found

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"The body is not valid JSON: {exc}", code="invalid_json", param="body")

    async def validate_call(data: Any, prefix: str = "") -> LLMCall:
        if not isinstance(data, dict):
            raise InvalidRequestError("A job must be a JSON object.", param=prefix or "body", status_code=422)
        try:
            call = LLMCall.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc, prefix)
        return await check_call(call, prefix)

    async def check_call(call: LLMCall, prefix: str = "") -> LLMCall:
        """What the wire model cannot know: a body is present, the model runs here, the callback is safe."""
        if call.is_empty:
            raise InvalidRequestError(
                "Give 'messages' (chat), 'prompt' (completion) or 'input' (embeddings).",
                param=f"{prefix}.messages" if prefix else "messages",
                status_code=422,
            )
        if call.model not in config.models:
            raise InvalidRequestError(
                f"Unknown model {call.model!r}; this service runs {', '.join(config.models)}.",
                code="model_not_found",
                param=f"{prefix}.model" if prefix else "model",
            )
        task = config.model_tasks.get(call.model)
        if task is not None and (call.kind == "embedding") != (task == "embedding"):
            wanted = "'input' (embeddings)" if task == "embedding" else "'messages' or 'prompt'"
            raise InvalidRequestError(
                f"{call.model} is a {task} model and cannot serve {call.kind} requests; send {wanted}, "
                "or pick a model that serves them.",
                code="unsupported_model_task",
                param=f"{prefix}.model" if prefix else "model",
            )
        if call.callback_url:
            await check_callback_url(call.callback_url, config.callback_policy)
        return call

    def new_job(call: LLMCall, key: str | None, batch_id: str | None = None) -> NewJob:
        return NewJob(call, sha256_hex(call.model_dump(mode="json")), key, batch_id)

    async def admit(owner: Tenant, count: int) -> None:
        """Admission control: a tenant's backlog is bounded; over it, come back later (429)."""
        active = await store.count_active(owner.id)
        if active + count > config.max_active_jobs_per_tenant:
            error = RateLimitError(
                f"{active} of your jobs are queued or running (limit {config.max_active_jobs_per_tenant}); "
                "retry after some finish",
                code="queue_full",
            )
            error.retry_after = 30
            raise error

    async def submit_one(owner: Tenant, call: LLMCall, key: str | None) -> tuple[Job, bool]:
        call = await check_call(call)
        await admit(owner, 1)
        (outcome,) = await store.submit(owner.id, [new_job(call, key)])
        if isinstance(outcome, Exception):
            raise outcome
        if outcome[1]:
            metrics.jobs_submitted.labels(outcome[0].model).inc()
        return outcome

    # -- jobs --------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=201, response_model=Job, tags=["jobs"])
    async def submit_job(
        request: Request,
        owner: Tenant = Depends(tenant),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> Response:
        call = await validate_call(await read_json(request))
        job, created = await submit_one(owner, call, idempotency_key)
        if created:
            return _json(job, 201)
        return _json(job, 200, {"Idempotent-Replayed": "true"})

    @app.post("/v1/jobs/bulk", status_code=201, response_model=BulkJobsResponse, tags=["jobs"])
    async def submit_jobs(
        request: Request,
        owner: Tenant = Depends(tenant),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> Response:
        """Submit many jobs in one transaction. Each item may carry its own ``idempotency_key``;
        otherwise it derives from the request's ``Idempotency-Key`` and the item's index."""
        try:
            bulk = BulkJobsRequest.model_validate(await read_json(request))
        except ValidationError as exc:
            raise validation_error(exc)
        if bulk.callback_url:
            await check_callback_url(bulk.callback_url, config.callback_policy)
        await admit(owner, len(bulk.jobs))
        batch_id = await store.create_batch(
            owner.id,
            bulk.callback_url,
            bulk.metadata,
            batch_id=f"batch_{sha256_hex([owner.id, idempotency_key])[:32]}" if idempotency_key else None,
        )
        items: list[BulkItemResult | None] = [None] * len(bulk.jobs)
        accepted: list[tuple[int, NewJob]] = []
        for index, raw in enumerate(bulk.jobs):
            item = dict(raw)
            key = item.pop("idempotency_key", None)
            if key is None and idempotency_key:
                key = derive_idempotency_key("bulk", idempotency_key, index)
            try:
                call = await validate_call(item, prefix=f"jobs.{index}")
            except InvalidRequestError as exc:
                items[index] = BulkItemResult(index=index, error=ErrorDetail(code=exc.code, message=exc.message, param=exc.param))
                continue
            accepted.append((index, new_job(call, str(key) if key else None, batch_id)))
        outcomes = await store.submit(owner.id, [job for _, job in accepted])
        for (index, _), outcome in zip(accepted, outcomes):
            if isinstance(outcome, Exception):
                detail = ErrorDetail(code=outcome.code, message=outcome.message, param=outcome.param)
                items[index] = BulkItemResult(index=index, error=detail)
            else:
                items[index] = BulkItemResult(index=index, job=outcome[0])
                if outcome[1]:
                    metrics.jobs_submitted.labels(outcome[0].model).inc()
        return _json(BulkJobsResponse(batch_id=batch_id, data=[item for item in items if item is not None]), 201)

    @app.get("/v1/jobs", response_model=JobPage, tags=["jobs"])
    async def list_jobs(
        request: Request,
        owner: Tenant = Depends(tenant),
        state: JobState | None = None,
        model: str | None = None,
        batch_id: str | None = None,
        limit: int = Query(default=20, ge=1, le=1000),
        after: str | None = Query(default=None, description="next_cursor of the previous page"),
    ) -> Response:
        """Newest first. Filter on metadata with ``metadata.<key>=<value>``."""
        metadata = {
            name.removeprefix("metadata."): value
            for name, value in request.query_params.items()
            if name.startswith("metadata.")
        }
        jobs, cursor = await store.list(owner.id, JobFilter(state, model, batch_id, metadata), limit, after)
        return _json(JobPage(data=jobs, next_cursor=cursor, has_more=cursor is not None))

    @app.get("/v1/jobs/{job_id}", response_model=Job, tags=["jobs"])
    async def get_job(job_id: str, owner: Tenant = Depends(tenant)) -> Response:
        return _json(await store.get(owner.id, job_id))

    @app.get("/v1/jobs/{job_id}/wait", response_model=Job, tags=["jobs"])
    async def wait_job(
        job_id: str,
        owner: Tenant = Depends(tenant),
        timeout: float = Query(default=30.0, ge=0.0),
    ) -> Response:
        """Long poll: answer the moment the job ends, or with its current state after ``timeout``."""
        deadline = time.monotonic() + min(timeout, config.max_wait_seconds)
        events = getattr(store, "events", None)
        while True:
            job = await store.get(owner.id, job_id)
            remaining = deadline - time.monotonic()
            if job.state.is_terminal or remaining <= 0:
                return _json(job)
            step = min(remaining, _RECHECK_SECONDS)
            if events is not None:
                await events.wait_finished(job_id, step)
            else:
                await asyncio.sleep(step)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=Job, tags=["jobs"])
    async def cancel_job(job_id: str, owner: Tenant = Depends(tenant)) -> Response:
        return _json(await store.cancel(owner.id, job_id))

    # -- keys, receipts, health --------------------------------------------------------
    @app.get("/v1/whoami", tags=["account"])
    async def whoami(owner: Tenant = Depends(tenant)) -> dict[str, str]:
        return {"tenant_id": owner.id, "tenant": owner.name}

    @app.get("/v1/webhook-secrets", tags=["account"])
    async def webhook_secrets(owner: Tenant = Depends(tenant)) -> dict[str, list[str]]:
        """The secrets webhooks are signed with, newest first (verify against any of them)."""
        return {"secrets": list(owner.webhook_secrets)}

    @app.post("/v1/webhook-secrets/rotate", tags=["account"])
    async def rotate_webhook_secret(
        owner: Tenant = Depends(tenant), keep_previous: bool = Query(default=True)
    ) -> dict[str, list[str]]:
        """Add a new secret. Webhooks carry a signature for each until the old one is dropped."""
        rotated = await store.rotate_webhook_secret(owner.id, keep_previous=keep_previous)
        return {"secrets": list(rotated.webhook_secrets)}

    @app.get("/v1/receipts/public-key", tags=["receipts"])
    async def receipt_public_key() -> dict[str, str]:
        if signer is None:
            raise InvalidRequestError("This service does not sign receipts.", code="receipts_disabled", status_code=404)
        return {"key_id": signer.key_id, "algorithm": "ed25519", "public_key": signer.public_key_b64(), "pem": signer.public_key_pem()}

    events = getattr(store, "events", None)
    app.include_router(openai_router(tenant, store, submit_one, config.models, events=events))
    batch_runner = BatchRunner(store, config.files_dir, config.models, events=events)
    app.state.batch_runner = batch_runner
    app.include_router(openai_batch_router(tenant, store, config.files_dir, batch_runner))

    @app.get("/v1/webhook-endpoint", tags=["account"])
    async def get_webhook_endpoint(owner: Tenant = Depends(tenant)) -> dict[str, str | None]:
        """Where tenant-level events (OpenAI ``batch.completed`` and friends) are sent."""
        return {"url": owner.webhook_url}

    @app.put("/v1/webhook-endpoint", tags=["account"])
    async def set_webhook_endpoint(request: Request, owner: Tenant = Depends(tenant)) -> dict[str, str | None]:
        body = await read_json(request)
        url = body.get("url") if isinstance(body, dict) else None
        if url is not None:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise InvalidRequestError("url must be an http(s) URL, or null to remove it.", param="url")
            await check_callback_url(url, config.callback_policy)
        return {"url": (await store.set_webhook_url(owner.id, url)).webhook_url}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(config.models)}

    @app.get("/metrics", tags=["health"])
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render(await store.count_by_state())
        return Response(body, media_type=content_type)

    return app

