"""OpenAI-compatible endpoints, backed by the same queue and dispatcher as native jobs.

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="ovn_...")
    client.chat.completions.create(model="smollm2-135m", messages=[...])

Each request becomes an ``interactive`` job; the response returns when the job ends, and
the ``x-request-id`` header carries the job id (``GET /v1/jobs/{id}`` shows it later). If
the client disconnects first, the job is cancelled. Errors use OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from .._exceptions import InvalidRequestError, OvernightError, ServiceError
from .._models import Job, JobState, LLMCall
from .http_errors import validation_error
from .store.base import JobStore, Tenant

__all__ = ["chat_call", "openai_router"]

_DISCONNECT_CHECK_SECONDS = 0.5
_UNSUPPORTED = ("tools", "tool_choice", "functions", "logit_bias", "audio", "modalities", "prediction")
_IGNORED = ("user", "store", "metadata", "service_tier", "parallel_tool_calls", "stream_options",
            "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs")


class ClientGone(OvernightError):
    """The caller hung up before the answer; nobody reads this response."""

    status_code = 499


def _text_content(content: Any, where: str) -> str:
    """OpenAI allows ``content`` as a string or a list of parts; only text parts run here."""
    if isinstance(content, str) or content is None:
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequestError("Only text content parts are supported.", code="unsupported_content", param=where)
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise InvalidRequestError("content must be a string or a list of text parts.", param=where)


def chat_call(body: dict[str, Any], kind: str) -> LLMCall:
    """Map an OpenAI chat/completions/embeddings body to an interactive :class:`LLMCall`."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", param="body")
    for name in _UNSUPPORTED:
        if body.get(name):
            raise InvalidRequestError(f"'{name}' is not supported by this service.", code="unsupported_parameter", param=name)
    if int(body.get("n") or 1) != 1:
        raise InvalidRequestError("Only n=1 is supported; send several requests instead.", code="unsupported_parameter", param="n")
    fields = {k: v for k, v in body.items() if k not in _IGNORED and k not in ("n", "stream")}
    if "max_completion_tokens" in fields:
        fields["max_tokens"] = fields.pop("max_completion_tokens")
    if kind == "chat":
        messages = fields.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError("'messages' must be a non-empty list.", param="messages")
        fields["messages"] = [
            {**{k: v for k, v in m.items() if k in ("role", "name")}, "content": _text_content(m.get("content"), f"messages.{i}.content")}
            if isinstance(m, dict) else m
            for i, m in enumerate(messages)
        ]
    elif kind == "completion":
        prompt = fields.pop("prompt", None)
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must be one string.", param="prompt")
        fields["prompt"] = prompt
        fields.pop("echo", None)
        fields.pop("suffix", None)
    else:
        fields.pop("encoding_format", None)
        fields.pop("dimensions", None)
    fields["priority"] = "interactive"
    try:
        return LLMCall.model_validate(fields)
    except ValidationError as exc:
        error = validation_error(exc)
        error.status_code = 400  # OpenAI answers invalid params with 400
        raise error


def openai_router(
    authenticate: Callable[..., Awaitable[Tenant]],
    store: JobStore,
    submit: Callable[[Tenant, LLMCall, str | None], Awaitable[tuple[Job, bool]]],
    models: tuple[str, ...],
    *,
    events: Any = None,
) -> APIRouter:
    """The ``/v1`` OpenAI routes. ``submit`` validates and queues a call (shared with ``/v1/jobs``)."""
    router = APIRouter(tags=["openai"])

    async def run_to_end(request: Request, owner: Tenant, call: LLMCall, key: str | None) -> Job:
        """Wait for the job; cancel it (and raise ClientGone) if the caller hangs up first."""
        job, _created = await submit(owner, call, key)
        while not job.state.is_terminal:
            if events is not None:
                await events.wait_finished(job.id, _DISCONNECT_CHECK_SECONDS)
            else:
                await asyncio.sleep(_DISCONNECT_CHECK_SECONDS)
            job = await store.get(owner.id, job.id)
            if not job.state.is_terminal and await request.is_disconnected():
                await store.cancel(owner.id, job.id)
                raise ClientGone(f"the client disconnected; job {job.id} was cancelled", code="client_closed_request")
        return job

    def finished(job: Job) -> dict[str, Any]:
        if job.state is JobState.SUCCEEDED and job.result is not None:
            return job.result
        error = job.error
        raise ServiceError(
            error.message if error else f"the job ended {job.state.value}",
            code=error.code if error else job.state.value,
            retryable=bool(error and error.retryable),
            status_code=400 if error and not error.retryable and error.code != "cancelled" else 500,
        )

    def respond(job: Job, body: dict[str, Any]) -> Response:
        return Response(json.dumps(body), media_type="application/json", headers={"x-request-id": job.id})

    @router.post("/v1/chat/completions")
    async def chat_completions(
        request: Request, owner: Tenant = Depends(authenticate), idempotency_key: str | None = Header(default=None)
    ) -> Response:
        body = await _json_body(request)
        call = chat_call(body, "chat")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await _stream(request, owner, call, idempotency_key, include_usage)
        job = await run_to_end(request, owner, call, idempotency_key)
        return respond(job, {**finished(job), "id": f"chatcmpl-{job.id}", "model": job.model})

    @router.post("/v1/completions")
    async def completions(
        request: Request, owner: Tenant = Depends(authenticate), idempotency_key: str | None = Header(default=None)
    ) -> Response:
        call = chat_call(await _json_body(request), "completion")
        job = await run_to_end(request, owner, call, idempotency_key)
        return respond(job, {**finished(job), "id": f"cmpl-{job.id}", "model": job.model})

    @router.post("/v1/embeddings")
    async def embeddings(
        request: Request, owner: Tenant = Depends(authenticate), idempotency_key: str | None = Header(default=None)
    ) -> Response:
        call = chat_call(await _json_body(request), "embedding")
        job = await run_to_end(request, owner, call, idempotency_key)
        return respond(job, {**finished(job), "model": job.model})

    @router.get("/v1/models")
    async def list_models(owner: Tenant = Depends(authenticate)) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "overnight"} for name in models],
        }

    async def _stream(request: Request, owner: Tenant, call: LLMCall, key: str | None, include_usage: bool) -> Response:
        """Server-sent events in OpenAI's chunk format, forwarding text as the engine makes it."""
        if events is None:
            raise InvalidRequestError("This deployment cannot stream.", code="unsupported_parameter", param="stream")
        job, _created = await submit(owner, call, key)
        pieces = events.subscribe_text(job.id)  # before we yield: the dispatcher has not claimed it yet

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, usage: Any = None) -> str:
            body: dict[str, Any] = {
                "id": f"chatcmpl-{job.id}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": job.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if usage is None else [],
            }
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n"

        async def stream() -> AsyncIterator[str]:
            sent = ""
            current = job
            try:
                yield chunk({"role": "assistant", "content": ""})
                while not current.state.is_terminal:
                    try:
                        piece = await asyncio.wait_for(pieces.get(), _DISCONNECT_CHECK_SECONDS)
                    except asyncio.TimeoutError:
                        current = await store.get(owner.id, job.id)
                        continue
                    sent += piece
                    yield chunk({"content": piece})
                current = await store.get(owner.id, job.id)
                if current.state is not JobState.SUCCEEDED or current.result is None:
                    error = current.error
                    failure = {"message": error.message if error else current.state.value, "type": "server_error",
                               "param": None, "code": error.code if error else current.state.value}
                    yield f"data: {json.dumps({'error': failure})}\n\n"
                    return
                text = current.text or ""
                if text.startswith(sent) and len(text) > len(sent):
                    yield chunk({"content": text[len(sent):]})  # what no streaming engine forwarded
                finish = current.result["choices"][0].get("finish_reason") or "stop"
                yield chunk({}, finish)
                if include_usage:
                    yield chunk({}, usage=current.result.get("usage"))
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:  # the client went away mid-stream
                if not current.state.is_terminal:
                    await asyncio.shield(_cancel_quietly(owner, job.id))
                raise
            finally:
                events.unsubscribe_text(job.id, pieces)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-request-id": job.id})

    async def _cancel_quietly(owner: Tenant, job_id: str) -> None:
        try:
            await store.cancel(owner.id, job_id)
        except OvernightError:
            pass  # it finished meanwhile

    return router


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"The body is not valid JSON: {exc}", code="invalid_json", param="body")


