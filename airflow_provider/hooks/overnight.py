"""``OvernightHook``: Overnight clients, blocking and async, from an Airflow connection.

    hook = OvernightHook()                                   # connection "overnight_default"
    job_id = hook.get_conn().send_job(LLMCall(model="smollm2-135m").add_user_message("Hi"))

    async with OvernightHook("overnight_prod").async_client() as client:   # in a trigger
        job = await client.get_job(job_id)

The connection: host = base URL (``http://127.0.0.1:8000``; a bare host gets ``extra.scheme``,
http by default, and ``port``), password = API key, extra = ``{"timeout": 60, "max_retries": 4}``.
As an environment variable::

    AIRFLOW_CONN_OVERNIGHT_DEFAULT='{"conn_type": "overnight", "host": "http://127.0.0.1:8000", "password": "ovn_..."}'

Async clients are built without blocking the event loop: the certificates are loaded once per
process, in a thread, and every client reuses that SSL context. Each gets its own small pool, so
500 concurrent long polls cost 500 x O(1) pool work, not O(500^2).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any, AsyncIterator, Callable, ClassVar
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook

from overnight import AsyncClient, Client, OvernightError

from ..exceptions import OvernightConnectionError
from ..get_provider_info import CONNECTION_TYPE, UI_FIELD_BEHAVIOUR

__all__ = ["OvernightHook", "client_options"]


def client_options(conn: Any) -> dict[str, Any]:
    """``api_key``, ``base_url``, ``timeout`` and ``max_retries`` from an Airflow connection."""
    conn_id = getattr(conn, "conn_id", None)
    if not conn.password:
        raise OvernightConnectionError(
            f"Connection {conn_id!r} has no API key: put it in the password field "
            "(create one with `overnight keys create`)."
        )
    try:
        extra = json.loads(conn.extra) if conn.extra else {}
    except ValueError as exc:
        raise OvernightConnectionError(f"Connection {conn_id!r}: extra is not valid JSON ({exc}).") from exc
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise OvernightConnectionError(f"Connection {conn_id!r} has no host: set it to the base URL, e.g. http://127.0.0.1:8000.")
    if "://" not in host:
        host = f"{extra.get('scheme') or 'http'}://{host}"
    if conn.port and urlsplit(host).port is None:
        parts = urlsplit(host)
        host = f"{parts.scheme}://{parts.hostname}:{conn.port}{parts.path}"
    options: dict[str, Any] = {"api_key": conn.password, "base_url": host}
    for name, convert in (("timeout", float), ("max_retries", int)):
        # the connection form may store its fields prefixed, as extra__overnight__<name>
        value = extra.get(name, extra.get(f"extra__{CONNECTION_TYPE}__{name}"))
        if value not in (None, ""):
            options[name] = convert(value)
    return options


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _build_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


async def shared_ssl_context() -> ssl.SSLContext:
    """The process's one SSL context; loading certificates takes ~60 ms, so it runs in a thread, once."""
    return _ssl_context if _ssl_context is not None else await asyncio.to_thread(_build_ssl_context)


def _new_async_http() -> httpx.AsyncClient:
    # One small pool per waiting trigger: httpx assigns requests to connections by scanning the
    # whole pool, so one pool shared by hundreds of concurrent long polls costs O(n^2) CPU.
    # Sharing the SSL context keeps each client cheap to build (~0.2 ms, no certificate loading).
    assert _ssl_context is not None, "await shared_ssl_context() first"
    return httpx.AsyncClient(verify=_ssl_context, limits=httpx.Limits(max_connections=4, max_keepalive_connections=1))


class OvernightHook(BaseHook):
    """Connects to an Overnight service.

    :param overnight_conn_id: the Airflow connection (type ``overnight``).
    :param client_overrides: ``Client`` options that win over the connection's (``timeout``, ``max_retries``).
    """

    conn_name_attr = "overnight_conn_id"
    default_conn_name = "overnight_default"
    conn_type = CONNECTION_TYPE
    hook_name = "Overnight"

    http_client_factory: ClassVar[Callable[[], httpx.Client] | None] = None
    """Override to give the blocking client its own ``httpx.Client`` (proxies, mTLS, tests)."""
    async_http_client_factory: ClassVar[Callable[[], httpx.AsyncClient]] = staticmethod(_new_async_http)
    """Builds the ``httpx.AsyncClient`` of one :meth:`async_client` (called on the event loop: keep it cheap)."""

    def __init__(self, overnight_conn_id: str = default_conn_name, **client_overrides: Any) -> None:
        super().__init__()
        self.overnight_conn_id = overnight_conn_id
        self.client_overrides = client_overrides

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form (also declared in ``get_provider_info``, which Airflow 3.2+ reads)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    def _options(self, conn: Any) -> dict[str, Any]:
        return {**client_options(conn), **self.client_overrides}

    @property
    def base_url(self) -> str:
        return self.get_conn().base_url

    def get_conn(self) -> Client:
        """A blocking ``overnight.Client``, built once per hook."""
        return self._client

    @cached_property
    def _client(self) -> Client:
        options = self._options(self.get_connection(self.overnight_conn_id))
        factory = type(self).http_client_factory
        return Client(**options, http_client=factory() if factory else None)

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[AsyncClient]:
        """An ``overnight.AsyncClient`` with its own small connection pool, closed on exit."""
        conn = await self.aget_connection(self.overnight_conn_id)
        options = self._options(conn)
        await shared_ssl_context()
        http = type(self).async_http_client_factory()
        try:
            yield AsyncClient(**options, http_client=http)
        finally:
            await http.aclose()

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's Test button: one authenticated request (the first page of jobs)."""
        try:
            client = self.get_conn()
            next(iter(client.iter_jobs(page_size=1)), None)
        except (OvernightError, OvernightConnectionError) as exc:
            return False, str(exc)
        return True, f"Connected to {client.base_url}."
