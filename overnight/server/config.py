"""``ServerConfig``: everything ``overnight serve`` needs, passed in, never global.

    config = ServerConfig(database="overnight.db", models=("smollm2-135m",))
    config = ServerConfig.from_env()       # OVERNIGHT_* variables over the defaults
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .callbacks import CallbackPolicy

__all__ = ["ServerConfig"]


def _default_data_dir() -> Path:
    return Path(os.environ.get("OVERNIGHT_DATA_DIR", ".overnight"))


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = field(default_factory=_default_data_dir)
    """Holds the SQLite database and the receipt signing key."""
    database: str | None = None
    """SQLite file; defaults to ``<data_dir>/overnight.db``."""
    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[str, ...] = ("smollm2-135m",)
    """Models this gateway accepts jobs for (the engine must serve them)."""
    model_tasks: dict[str, str] = field(default_factory=dict)
    """``chat``, ``completion`` or ``embedding`` per model (from the registry); calls of
    another kind are refused at submission. Models not listed accept every kind."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Larger request bodies are refused with 413."""
    max_file_bytes: int = 200 * 1024 * 1024
    """Largest OpenAI batch input file accepted by ``POST /v1/files`` (413 beyond)."""
    max_active_jobs_per_tenant: int = 200_000
    """Beyond this many queued or running jobs, a tenant's submissions get 429 with Retry-After."""
    max_wait_seconds: float = 60.0
    """Upper bound of ``GET /v1/jobs/{id}/wait?timeout=``."""
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    """Which callback hosts are allowed; private addresses are refused by default."""
    lease_seconds: float = 30.0
    worker_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    @property
    def database_path(self) -> str:
        return self.database or str(self.data_dir / "overnight.db")

    @property
    def files_dir(self) -> Path:
        """OpenAI batch input and output files."""
        return self.data_dir / "files"

    @property
    def receipt_key_path(self) -> Path:
        return self.data_dir / "receipt_ed25519.pem"

    @classmethod
    def from_env(cls, **overrides: object) -> "ServerConfig":
        """Read ``OVERNIGHT_DATABASE``, ``OVERNIGHT_MODELS`` (comma list),
        ``OVERNIGHT_CALLBACK_ALLOWLIST`` (comma list of hosts/CIDRs) and friends."""
        env = os.environ
        config = cls()
        values: dict[str, object] = {}
        if "OVERNIGHT_DATABASE" in env:
            values["database"] = env["OVERNIGHT_DATABASE"]
        if "OVERNIGHT_MODELS" in env:
            values["models"] = tuple(m.strip() for m in env["OVERNIGHT_MODELS"].split(",") if m.strip())
        if "OVERNIGHT_MAX_BODY_BYTES" in env:
            values["max_body_bytes"] = int(env["OVERNIGHT_MAX_BODY_BYTES"])
        if "OVERNIGHT_CALLBACK_ALLOWLIST" in env:
            allow = tuple(a.strip() for a in env["OVERNIGHT_CALLBACK_ALLOWLIST"].split(",") if a.strip())
            values["callback_policy"] = CallbackPolicy(allowlist=allow)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(config, **values)  # type: ignore[arg-type]
