"""Real processes for end-to-end tests: ``overnight serve`` and a webhook receiver.

    with OvernightProcess(tmp_path) as server:          # fake engine unless told otherwise
        client = Client(api_key=server.api_key, base_url=server.url)
    with WebhookReceiver(secrets) as receiver:         # verifies with `standardwebhooks`
        ... receiver.url ...; receiver.events
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_key(data_dir: Path, tenant: str = "default") -> dict[str, str]:
    output = subprocess.check_output(
        [sys.executable, "-m", "overnight", "keys", "create", "--json", "--tenant", tenant, "--data-dir", str(data_dir)],
        cwd=REPO, env=_env(),
    )
    return json.loads(output)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class OvernightProcess:
    """``overnight serve`` as a subprocess on a free port, with a tenant key ready."""

    def __init__(self, data_dir: Path, *, engine: str = "tests.fakes:create_engine",
                 extra_args: Sequence[str] = (), startup_timeout: float = 60.0) -> None:
        self.data_dir = data_dir
        self.engine = engine
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"
        credentials = create_key(data_dir)
        self.api_key = credentials["api_key"]
        self.webhook_secret = credentials["webhook_secret"]

    def start(self) -> "OvernightProcess":
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "overnight", "serve", "--engine", self.engine, "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--allow-callback", "127.0.0.0/8", *self.extra_args],
            cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"overnight serve exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a readiness endpoint, not standing in for synchronisation
        raise RuntimeError(f"overnight serve did not become healthy:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "OvernightProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that verifies each webhook with `standardwebhooks`.

    ``fail_first`` answers that many requests with 500 before accepting; ``events`` is a
    queue of ``(webhook_id, payload)`` for every verified delivery.
    """

    def __init__(self, secret: str, *, fail_first: int = 0, status: int = 204) -> None:
        self.verifier = Webhook(secret)
        self.fail_first = fail_first
        self.status = status
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = receiver.verifier.verify(body, headers)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.events.put((headers["webhook-id"], payload))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "WebhookReceiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def collect(self, count: int, timeout: float = 60.0) -> list[tuple[str, dict[str, Any]]]:
        """Block until ``count`` verified webhooks arrived (raises queue.Empty on timeout)."""
        deadline = time.monotonic() + timeout
        return [self.events.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(count)]
