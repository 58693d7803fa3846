"""Deterministic test doubles: an engine whose behaviour is chosen by the prompt, and a clock.

The prompt's last user message picks what ``EchoEngine`` does:
- ``"hang"``: run until cancelled;
- ``"fail-retryable"`` / ``"fail-fatal"``: raise an ``EngineError``;
- ``"fail-once"``: fail retryably on attempt 1, succeed after;
- ``"slow:<seconds>"``: take that long (engine work, not synchronisation);
- anything else: answer ``"echo: <text>"`` at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Sequence

from overnight.engine import EngineError, EngineJob, EngineResult


class EchoEngine:
    def __init__(self, models: Sequence[str] = ("smollm2-135m",), capacity: int = 8) -> None:
        self.models = tuple(models)
        self._capacity = capacity
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.runs: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.max_concurrent = 0
        self._running = 0

    def capacity(self, model: str) -> int:
        return self._capacity

    async def run(self, job: EngineJob) -> EngineResult:
        self.runs[job.id] += 1
        self._running += 1
        self.max_concurrent = max(self.max_concurrent, self._running)
        self.started.put_nowait(job.id)
        try:
            request = job.request
            if request.input is not None:
                inputs = [request.input] if isinstance(request.input, str) else request.input
                return EngineResult.embeddings([[float(len(t)), 1.0] for t in inputs], prompt_tokens=len(inputs), model=job.model)
            text = request.messages[-1].content if request.messages else request.prompt or ""
            if text == "hang":
                await asyncio.Event().wait()
            if text == "fail-retryable" or (text == "fail-once" and job.attempt == 1):
                raise EngineError("replica_died", "the replica died", retryable=True)
            if text == "fail-fatal":
                raise EngineError("context_length_exceeded", "prompt too long", retryable=False)
            if text.startswith("slow:"):
                await asyncio.sleep(float(text.split(":", 1)[1]))
            reply = f"echo: {text}"
            if job.on_text is not None:
                for word in reply.split(" "):
                    job.on_text(word if word == reply.split(" ")[0] else f" {word}")
                    await asyncio.sleep(0)  # let the stream flush between pieces
            make = EngineResult.completion if request.prompt is not None else EngineResult.chat
            return make(reply, prompt_tokens=len(text.split()), completion_tokens=len(reply.split()), model=job.model)
        finally:
            self._running -= 1

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


def create_engine(models: Sequence[str]) -> EchoEngine:
    """Factory for ``overnight serve --engine tests.fakes:create_engine``."""
    return EchoEngine(models, capacity=16)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
