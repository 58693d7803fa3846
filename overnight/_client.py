"""``Client`` and ``AsyncClient``: the same methods, one blocking and one async.

    client = Client(api_key="ovn_...", base_url="http://127.0.0.1:8000")
    job_id = client.send_job(LLMCall(model="smollm2-135m").add_user_message("Hi"))
    job = client.wait_for_job(job_id)
    print(job.text, job.usage)

``BaseClient`` owns everything that is not I/O: configuration, request building,
response parsing and the retry decision. Retries (connect errors, 429, 5xx) resend the
same ``Idempotency-Key``: every write gets one automatically, so a retry never
creates a second job.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, AsyncIterator, Iterator, Mapping, Sequence, TypeVar

import httpx
from pydantic import BaseModel

from ._exceptions import APIError, TransportError, WaitTimeout, JobFailedError, error_from_response
from ._hashing import derive_idempotency_key, new_idempotency_key
from ._models import BulkItemResult, BulkJobsResponse, Job, JobPage, JobState, LLMCall, Priority, WebhookEvent
from ._webhooks import verify_webhook as _verify_webhook

__all__ = ["AsyncClient", "BaseClient", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BULK_CHUNK = 1000
_Model = TypeVar("_Model", bound=BaseModel)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class BaseClient:
    """Configuration and everything that does no I/O, shared by both clients."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_seconds: float = 0.5,
    ) -> None:
        api_key = api_key or os.environ.get("OVERNIGHT_API_KEY")
        if not api_key:
            raise ValueError("Pass api_key=... or set OVERNIGHT_API_KEY (create a key with `overnight keys create`).")
        self.api_key = api_key
        self.base_url = (base_url or os.environ.get("OVERNIGHT_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": "overnight-python/0.1.0"}

    @staticmethod
    def _job_body(
        call: LLMCall,
        callback_url: str | None,
        metadata: Mapping[str, str] | None,
        priority: str | None,
    ) -> dict[str, Any]:
        updates: dict[str, Any] = {}
        if callback_url is not None:
            updates["callback_url"] = callback_url
        if metadata:
            updates["metadata"] = {**call.metadata, **metadata}
        if priority is not None:
            updates["priority"] = Priority(priority)
        return call.model_copy(update=updates).model_dump(mode="json", exclude_none=True)

    @staticmethod
    def _bulk_bodies(
        calls: Sequence[LLMCall], callback_url: str | None, idempotency_key: str
    ) -> list[tuple[int, dict[str, Any], str]]:
        """Split into chunks; each chunk gets its own stable key so retries re-attach."""
        chunks = []
        for start in range(0, len(calls), BULK_CHUNK):
            jobs = [
                {**c.model_dump(mode="json", exclude_none=True), "idempotency_key": derive_idempotency_key("client", idempotency_key, start + i)}
                for i, c in enumerate(calls[start : start + BULK_CHUNK])
            ]
            body: dict[str, Any] = {"jobs": jobs}
            if callback_url:
                body["callback_url"] = callback_url
            chunks.append((start, body, f"{idempotency_key}:{start}"))
        return chunks

    @staticmethod
    def _list_params(state: JobState | str | None, model: str | None, batch_id: str | None,
                     metadata: Mapping[str, str] | None, page_size: int, after: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": page_size}
        if state is not None:
            params["state"] = JobState(state).value
        if model:
            params["model"] = model
        if batch_id:
            params["batch_id"] = batch_id
        if after:
            params["after"] = after
        for key, value in (metadata or {}).items():
            params[f"metadata.{key}"] = value
        return params

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise error_from_response(response.status_code, body, _parse_retry_after(response.headers.get("retry-after")))

    def _retry_delay(self, attempt: int, error: Exception) -> float | None:
        """Seconds to wait before retry ``attempt`` (1-based), or None to give up."""
        retryable = isinstance(error, TransportError) or (isinstance(error, APIError) and error.retryable)
        if not retryable or attempt > self.max_retries:
            return None
        if isinstance(error, APIError) and error.retry_after is not None:
            return min(error.retry_after, 60.0)
        return self.backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random())

    @staticmethod
    def _finished(job: Job, raise_on_failure: bool) -> Job:
        if raise_on_failure and job.state is not JobState.SUCCEEDED:
            raise JobFailedError(job)
        return job

    @staticmethod
    def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str]) -> WebhookEvent:
        """Check a webhook's Standard Webhooks signature and return its event (raises otherwise)."""
        return _verify_webhook(body, headers, secret)


class Client(BaseClient):
    """Blocking client. Use as a context manager, or call :meth:`close`."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 http_client: httpx.Client | None = None, **options: Any) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = http_client or httpx.Client(timeout=self.timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                 idempotency_key: str | None = None, timeout: float | None = None) -> httpx.Response:
        headers = self._headers
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, self.base_url + path, json=json, params=params,
                                              headers=headers, timeout=timeout or self.timeout)
                self._raise_for(response)
                return response
            except (httpx.TransportError, APIError) as exc:
                error = TransportError(f"could not reach {self.base_url}: {exc}") if isinstance(exc, httpx.TransportError) else exc
                delay = self._retry_delay(attempt, error)
                if delay is None:
                    raise error from (exc if error is not exc else None)  # never a cause cycle
                time.sleep(delay)

    def _get(self, path: str, model: type[_Model], **kwargs: Any) -> _Model:
        return model.model_validate(self._request("GET", path, **kwargs).json())

    def submit_job(self, call: LLMCall, *, callback_url: str | None = None, idempotency_key: str | None = None,
                   metadata: Mapping[str, str] | None = None, priority: str | None = None) -> Job:
        """Queue one job and return it (an earlier job when ``idempotency_key`` was used before)."""
        body = self._job_body(call, callback_url, metadata, priority)
        response = self._request("POST", "/v1/jobs", json=body, idempotency_key=idempotency_key or new_idempotency_key())
        return Job.model_validate(response.json())

    def send_job(self, call: LLMCall, *, callback_url: str | None = None, idempotency_key: str | None = None,
                 metadata: Mapping[str, str] | None = None, priority: str | None = None) -> str:
        """Queue one job and return its id."""
        return self.submit_job(call, callback_url=callback_url, idempotency_key=idempotency_key,
                               metadata=metadata, priority=priority).id

    def send_jobs(self, calls: Sequence[LLMCall], *, callback_url: str | None = None,
                  idempotency_key: str | None = None, progress: bool = False) -> list[BulkItemResult]:
        """Queue many jobs in bulk requests; one result per call, in order. ``callback_url``
        receives ``batch.completed`` (each call's own ``callback_url`` gets its job events)."""
        results: list[BulkItemResult] = []
        with _progress(progress, len(calls), "submitting") as advance:
            for start, body, key in self._bulk_bodies(calls, callback_url, idempotency_key or new_idempotency_key()):
                page = BulkJobsResponse.model_validate(self._request("POST", "/v1/jobs/bulk", json=body, idempotency_key=key).json())
                results.extend(item.model_copy(update={"index": start + item.index}) for item in page.data)
                advance(len(body["jobs"]))
        return results

    def get_job(self, job_id: str) -> Job:
        return self._get(f"/v1/jobs/{job_id}", Job)

    def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait_for_job(self, job_id: str, timeout: float | None = None, *, poll_seconds: float = 30.0,
                     raise_on_failure: bool = False) -> Job:
        """Block until the job ends (long polls, no busy loop). Raises WaitTimeout after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.monotonic()))
            job = self._get(f"/v1/jobs/{job_id}/wait", Job, params={"timeout": step}, timeout=step + self.timeout)
            if job.state.is_terminal:
                return self._finished(job, raise_on_failure)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} still {job.state.value} after {timeout} s")

    def iter_jobs(self, *, state: JobState | str | None = None, model: str | None = None, batch_id: str | None = None,
                  metadata: Mapping[str, str] | None = None, page_size: int = 100) -> Iterator[Job]:
        """All matching jobs, newest first, fetched page by page."""
        after = None
        while True:
            page = self._get("/v1/jobs", JobPage, params=self._list_params(state, model, batch_id, metadata, page_size, after))
            yield from page.data
            if not page.next_cursor:
                return
            after = page.next_cursor

    def receipt_public_key(self) -> str:
        return self._request("GET", "/v1/receipts/public-key").json()["public_key"]

    def webhook_secrets(self) -> list[str]:
        return self._request("GET", "/v1/webhook-secrets").json()["secrets"]


class AsyncClient(BaseClient):
    """Async twin of :class:`Client`; every method has the same name and arguments."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 http_client: httpx.AsyncClient | None = None, **options: Any) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = http_client or httpx.AsyncClient(timeout=self.timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                       idempotency_key: str | None = None, timeout: float | None = None) -> httpx.Response:
        headers = self._headers
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, self.base_url + path, json=json, params=params,
                                                    headers=headers, timeout=timeout or self.timeout)
                self._raise_for(response)
                return response
            except (httpx.TransportError, APIError) as exc:
                error = TransportError(f"could not reach {self.base_url}: {exc}") if isinstance(exc, httpx.TransportError) else exc
                delay = self._retry_delay(attempt, error)
                if delay is None:
                    raise error from (exc if error is not exc else None)  # never a cause cycle
                await asyncio.sleep(delay)

    async def _get(self, path: str, model: type[_Model], **kwargs: Any) -> _Model:
        return model.model_validate((await self._request("GET", path, **kwargs)).json())

    async def submit_job(self, call: LLMCall, *, callback_url: str | None = None, idempotency_key: str | None = None,
                         metadata: Mapping[str, str] | None = None, priority: str | None = None) -> Job:
        body = self._job_body(call, callback_url, metadata, priority)
        response = await self._request("POST", "/v1/jobs", json=body, idempotency_key=idempotency_key or new_idempotency_key())
        return Job.model_validate(response.json())

    async def send_job(self, call: LLMCall, *, callback_url: str | None = None, idempotency_key: str | None = None,
                       metadata: Mapping[str, str] | None = None, priority: str | None = None) -> str:
        return (await self.submit_job(call, callback_url=callback_url, idempotency_key=idempotency_key,
                                      metadata=metadata, priority=priority)).id

    async def send_jobs(self, calls: Sequence[LLMCall], *, callback_url: str | None = None,
                        idempotency_key: str | None = None, progress: bool = False) -> list[BulkItemResult]:
        results: list[BulkItemResult] = []
        with _progress(progress, len(calls), "submitting") as advance:
            for start, body, key in self._bulk_bodies(calls, callback_url, idempotency_key or new_idempotency_key()):
                response = await self._request("POST", "/v1/jobs/bulk", json=body, idempotency_key=key)
                page = BulkJobsResponse.model_validate(response.json())
                results.extend(item.model_copy(update={"index": start + item.index}) for item in page.data)
                advance(len(body["jobs"]))
        return results

    async def get_job(self, job_id: str) -> Job:
        return await self._get(f"/v1/jobs/{job_id}", Job)

    async def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate((await self._request("POST", f"/v1/jobs/{job_id}/cancel")).json())

    async def wait_for_job(self, job_id: str, timeout: float | None = None, *, poll_seconds: float = 30.0,
                           raise_on_failure: bool = False) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.monotonic()))
            job = await self._get(f"/v1/jobs/{job_id}/wait", Job, params={"timeout": step}, timeout=step + self.timeout)
            if job.state.is_terminal:
                return self._finished(job, raise_on_failure)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} still {job.state.value} after {timeout} s")

    async def iter_jobs(self, *, state: JobState | str | None = None, model: str | None = None,
                        batch_id: str | None = None, metadata: Mapping[str, str] | None = None,
                        page_size: int = 100) -> AsyncIterator[Job]:
        after = None
        while True:
            page = await self._get("/v1/jobs", JobPage, params=self._list_params(state, model, batch_id, metadata, page_size, after))
            for job in page.data:
                yield job
            if not page.next_cursor:
                return
            after = page.next_cursor

    async def receipt_public_key(self) -> str:
        return (await self._request("GET", "/v1/receipts/public-key")).json()["public_key"]

    async def webhook_secrets(self) -> list[str]:
        return (await self._request("GET", "/v1/webhook-secrets")).json()["secrets"]


class _progress:
    """A rich progress bar when asked for, else a no-op ``advance``."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self._bar = Progress()
        self._bar.start()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()
