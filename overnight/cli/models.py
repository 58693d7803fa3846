"""``overnight models``: list the registry and prepare weights.

    overnight models list [--models-file models.toml]
    overnight models prepare smollm2-135m [--cache-dir DIR] [--models-file models.toml]

Wired into the main parser by ``overnight.cli``::

    sub = parser.add_subparsers()
    models.add_parser(sub)
    args = parser.parse_args()
    raise SystemExit(args.func(args))
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..prepare import PrepareError, is_prepared, prepare_model
from ..registry import ModelRegistry, resolve_cache_dir

__all__ = ["add_parser", "list_models", "prepare"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``models list`` and ``models prepare NAME`` on ``subparsers``."""
    models = subparsers.add_parser("models", help="list models and prepare their weights")
    models_sub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    models_sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-file", default=None,
        help="JSON or TOML models file merged over the defaults ($OVERNIGHT_MODELS_FILE)",
    )
    common.add_argument(
        "--cache-dir", default=None,
        help="where prepared weights live ($OVERNIGHT_CACHE_DIR, default ~/.cache/overnight)",
    )

    listing = models_sub.add_parser("list", parents=[common], help="list known models")
    listing.set_defaults(func=list_models)

    prep = models_sub.add_parser(
        "prepare", parents=[common], help="convert or download a model's weights"
    )
    prep.add_argument("name", help="model name from the registry, e.g. smollm2-135m")
    prep.set_defaults(func=prepare)


def _error(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def _registry(args: argparse.Namespace) -> ModelRegistry | None:
    try:
        return ModelRegistry.load(args.models_file)
    except ValueError as exc:
        _error(str(exc))
        return None


def list_models(args: argparse.Namespace) -> int:
    """Print the registry as a table. Returns the exit code."""
    console = Console()
    registry = _registry(args)
    if registry is None:
        return 2
    cache = resolve_cache_dir(args.cache_dir)
    table = Table(title="Models")
    for column in ("name", "task", "source", "replicas", "max ongoing", "GPUs", "ready"):
        table.add_column(column)
    for spec in registry:
        r = spec.replicas
        replicas = str(r.num_replicas) if r.num_replicas else f"{r.min_replicas}-{r.max_replicas}"
        if spec.gguf is not None:
            ready = "yes" if is_prepared(spec, cache) else "no: models prepare"
        else:
            ready = "-"
        table.add_row(
            spec.name, spec.task, spec.resolved_source(cache), replicas,
            str(spec.max_ongoing_requests), f"{r.num_gpus:g}", ready,
        )
    console.print(table)
    return 0


def prepare(args: argparse.Namespace) -> int:
    """Prepare ``args.name``'s weights, with a progress display. Returns the exit code."""
    console = Console()
    registry = _registry(args)
    if registry is None:
        return 2
    if args.name not in registry:
        _error(f"unknown model {args.name!r}; known: {', '.join(registry.names())}")
        return 2
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:
            path = prepare_model(args.name, registry, args.cache_dir, progress=progress)
    except PrepareError as exc:
        _error(exc.message)
        return 1
    console.print(f"{args.name} ready at {path}", soft_wrap=True, markup=False)
    return 0
