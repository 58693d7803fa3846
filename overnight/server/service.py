"""The embedded service: store, dispatcher, webhook sender and API in one ASGI app.

    app = create_service(ServerConfig(), engine=build_engine(["smollm2-135m"]))
    uvicorn.run(app, host="127.0.0.1", port=8000)

The app's lifespan opens the store, starts the engine (when it has ``start``), and runs
the dispatcher and the webhook sender as background tasks until shutdown.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

import httpx
from fastapi import FastAPI

from .._receipts import ReceiptSigner
from ..engine import Engine
from .app import create_app
from .config import ServerConfig
from .dispatcher import Dispatcher, DispatcherConfig
from .events import JobEvents
from .metrics import Metrics
from .outbox import WebhookDeliverer
from .store.sqlite import SQLiteJobStore

__all__ = ["create_service"]


def create_service(config: ServerConfig, engine: Engine) -> FastAPI:
    """Build the whole service over ``engine``; nothing runs until the app starts."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    events = JobEvents()
    store = SQLiteJobStore(config.database_path, events=events)
    signer = ReceiptSigner.load_or_create(config.receipt_key_path)
    metrics = Metrics()

    async def secrets_for_tenant(tenant_id: str) -> Sequence[str]:
        tenant = await store.get_tenant(tenant_id)
        return tenant.webhook_secrets if tenant else ()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        start = getattr(engine, "start", None)
        if start is not None:
            await start()
        stop = asyncio.Event()
        async with httpx.AsyncClient(follow_redirects=False) as http:
            deliverer = WebhookDeliverer(
                store, secrets_for_tenant, http, config.callback_policy, metrics=metrics.webhook_delivery
            )
            events.on_webhook(deliverer.wake)
            dispatcher = Dispatcher(
                store,
                engine,
                DispatcherConfig(worker_id=config.worker_id, lease_seconds=config.lease_seconds),
                signer=signer,
                metrics=metrics,
            )
            app.state.dispatcher = dispatcher
            tasks = [
                asyncio.create_task(dispatcher.run(stop)),
                asyncio.create_task(deliverer.run(stop)),
                asyncio.create_task(app.state.batch_runner.run(stop)),
            ]
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                close = getattr(engine, "close", None)
                if close is not None:
                    await close()
                await store.close()

    return create_app(store, config, signer=signer, metrics=metrics, lifespan=lifespan)
