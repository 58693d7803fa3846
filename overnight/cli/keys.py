"""``overnight keys``: API keys and webhook secrets, written straight to the local database.

    overnight keys create --tenant acme            # prints the key once, and the webhook secret
    overnight keys rotate-webhook-secret --tenant acme
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from ..server.config import ServerConfig
from ..server.store.sqlite import SQLiteJobStore

__all__ = ["add_parser"]


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = subparsers.add_parser("keys", help="create API keys and rotate webhook secrets")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    keys_sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tenant", default="default", help="tenant name (created when new)")
    common.add_argument("--data-dir", type=Path, default=None)
    common.add_argument("--database", default=None)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    create = keys_sub.add_parser("create", parents=[common], help="create an API key")
    create.set_defaults(func=create_key)
    rotate = keys_sub.add_parser("rotate-webhook-secret", parents=[common], help="add a new webhook secret")
    rotate.add_argument("--drop-previous", action="store_true", help="stop signing with the old secret now")
    rotate.set_defaults(func=rotate_secret)


def _store(args: argparse.Namespace) -> SQLiteJobStore:
    config = ServerConfig.from_env(data_dir=args.data_dir, database=args.database)
    Path(config.database_path).parent.mkdir(parents=True, exist_ok=True)
    return SQLiteJobStore(config.database_path)


def create_key(args: argparse.Namespace) -> int:
    async def go() -> dict[str, str]:
        store = _store(args)
        await store.open()
        try:
            tenant = await store.create_tenant(args.tenant)
            key = await store.create_api_key(tenant.id)
        finally:
            await store.close()
        return {"tenant": tenant.name, "tenant_id": tenant.id, "api_key": key, "webhook_secret": tenant.webhook_secrets[0]}

    created = asyncio.run(go())
    if args.json:
        print(json.dumps(created))
    else:
        print(f"tenant:         {created['tenant']} ({created['tenant_id']})")
        print(f"api key:        {created['api_key']}   (shown once; only its hash is stored)")
        print(f"webhook secret: {created['webhook_secret']}")
    return 0


def rotate_secret(args: argparse.Namespace) -> int:
    async def go() -> list[str]:
        store = _store(args)
        await store.open()
        try:
            tenant = await store.create_tenant(args.tenant)
            return list((await store.rotate_webhook_secret(tenant.id, keep_previous=not args.drop_previous)).webhook_secrets)
        finally:
            await store.close()

    secrets = asyncio.run(go())
    print(json.dumps({"webhook_secrets": secrets}) if args.json else "\n".join(secrets))
    return 0
