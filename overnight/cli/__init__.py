"""The ``overnight`` command.

    overnight serve [--engine ray] [--port 8000] [--allow-callback 127.0.0.0/8]
    overnight keys create --tenant acme
    overnight submit jobs.jsonl --out results.jsonl
    overnight status JOB_ID | wait JOB_ID | cancel JOB_ID
    overnight models prepare smollm2-135m
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import demo, jobs, keys, models, serve

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overnight", description="Asynchronous batch LLM inference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (serve, jobs, keys, models, demo):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
