"""The ``Engine`` protocol: the only thing the dispatcher knows about inference.

``ray_backend.RayServeEngine`` implements it on Ray Serve + vLLM; tests use small
deterministic engines. An engine runs one claimed job and returns an OpenAI-shaped
response, or raises :class:`EngineError` saying whether a retry may help.

    class EchoEngine:
        models = ("echo",)
        def capacity(self, model: str) -> int: return 64
        async def run(self, job: EngineJob) -> EngineResult:
            text = job.request.messages[-1].content
            return EngineResult.chat(text, prompt_tokens=1, completion_tokens=1)
        async def cancel(self, job_id: str) -> None: ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ._models import LLMCall, Priority, Usage

__all__ = ["Engine", "EngineError", "EngineJob", "EngineResult"]


@dataclass(frozen=True)
class EngineJob:
    """What the dispatcher hands an engine: the request and who asked for it."""

    id: str
    model: str
    request: LLMCall
    priority: Priority
    attempt: int
    on_text: Callable[[str], None] | None = field(default=None, compare=False)
    """When set, a streaming engine calls it with each new piece of output text."""


@dataclass
class EngineResult:
    """An OpenAI-shaped response (``choices`` or ``data``) with its token usage."""

    response: dict[str, Any]
    usage: Usage
    engine_seconds: float = 0.0

    @classmethod
    def chat(
        cls,
        text: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str = "stop",
        model: str = "",
        engine_seconds: float = 0.0,
    ) -> "EngineResult":
        """A ``chat.completion`` response, for ``messages`` calls."""
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        return cls._generated("chat.completion", choice, prompt_tokens, completion_tokens, model, engine_seconds)

    @classmethod
    def completion(
        cls,
        text: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str = "stop",
        model: str = "",
        engine_seconds: float = 0.0,
    ) -> "EngineResult":
        """A ``text_completion`` response, for ``prompt`` (non-chat) calls."""
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return cls._generated("text_completion", choice, prompt_tokens, completion_tokens, model, engine_seconds)

    @classmethod
    def _generated(
        cls, kind: str, choice: dict[str, Any], prompt_tokens: int, completion_tokens: int, model: str,
        engine_seconds: float,
    ) -> "EngineResult":
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        response = {
            "object": kind, "created": int(time.time()), "model": model, "choices": [choice],
            "usage": usage.model_dump(),
        }
        return cls(response=response, usage=usage, engine_seconds=engine_seconds)

    @classmethod
    def embeddings(
        cls, vectors: list[list[float]], *, prompt_tokens: int, model: str = "", engine_seconds: float = 0.0
    ) -> "EngineResult":
        """An embeddings ``list`` response, for ``input`` calls."""
        usage = Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
        response = {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return cls(response=response, usage=usage, engine_seconds=engine_seconds)


class EngineError(Exception):
    """An attempt failed. ``retryable=True`` sends the job back to the queue."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (Ray, multiprocessing)
        return (type(self), (self.code, self.message), {"retryable": self.retryable})


@runtime_checkable
class Engine(Protocol):
    """Where jobs run. The dispatcher claims at most ``capacity(model)`` jobs at once."""

    models: Sequence[str]

    def capacity(self, model: str) -> int:
        """How many jobs of ``model`` may be in flight at once (replicas x max ongoing)."""
        ...

    async def run(self, job: EngineJob) -> EngineResult:
        """Run one job to completion. Raise :class:`EngineError` on failure."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Abort a running job; ``run`` then raises or returns early. Unknown ids are ignored."""
        ...
