"""``overnight serve``: API, dispatcher, webhook sender and engine in one process.

    overnight serve                                   # local Ray + vLLM, smollm2-135m
    overnight serve --engine mypkg.engines:create     # any Engine factory(models)
"""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..engine import Engine
from ..registry import ModelRegistry
from ..server.callbacks import CallbackPolicy
from ..server.config import ServerConfig

__all__ = ["add_parser", "load_engine"]


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    serve = subparsers.add_parser("serve", help="run the embedded service (API, queue, dispatcher, engine)")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8000")
    serve.add_argument("--data-dir", type=Path, default=None, help="database and receipt key ($OVERNIGHT_DATA_DIR, default .overnight)")
    serve.add_argument("--database", default=None, help="SQLite file (default <data-dir>/overnight.db)")
    serve.add_argument("--models", default=None, help="comma list of models to serve ($OVERNIGHT_MODELS, default smollm2-135m)")
    serve.add_argument("--engine", default="ray", help="'ray' (Ray Serve + vLLM) or module:factory taking the model list")
    serve.add_argument(
        "--allow-callback", action="append", default=None, metavar="HOST_OR_CIDR",
        help="allow webhook callbacks to this private host or network (repeatable), e.g. 127.0.0.0/8",
    )
    serve.add_argument("--lease-seconds", type=float, default=None)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=run)


def load_engine(spec: str, models: Sequence[str]) -> Engine:
    """``"ray"`` builds the Ray Serve + vLLM engine; ``"pkg.module:factory"`` calls ``factory(models)``."""
    if spec == "ray":
        from ray_backend import build_engine

        return build_engine(list(models))
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise SystemExit(f"--engine must be 'ray' or 'module:factory', got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)(list(models))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..server.service import create_service

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, object] = {
        "host": args.host, "port": args.port, "data_dir": args.data_dir, "database": args.database,
        "lease_seconds": args.lease_seconds,
    }
    if args.models:
        overrides["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.allow_callback:
        overrides["callback_policy"] = CallbackPolicy(allowlist=tuple(args.allow_callback))
    config = ServerConfig.from_env(**overrides)
    registry = ModelRegistry.load()
    tasks = {name: registry.get(name).task for name in config.models if name in registry}
    config = replace(config, model_tasks=tasks)
    engine = load_engine(args.engine, config.models)
    app = create_service(config, engine)
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, access_log=False)
    return 0
