"""An engine that does no inference, to measure the queue alone.

``overnight serve --engine bench.noop_engine:create_engine``. A prompt ``"sleep:<s>"``
takes that long; anything else answers at once.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from overnight.engine import EngineJob, EngineResult


class NoopEngine:
    def __init__(self, models: Sequence[str], capacity: int = 256) -> None:
        self.models = tuple(models)
        self._capacity = capacity

    def capacity(self, model: str) -> int:
        return self._capacity

    async def run(self, job: EngineJob) -> EngineResult:
        text = job.request.messages[-1].content if job.request.messages else ""
        if text.startswith("sleep:"):
            await asyncio.sleep(float(text.split(":", 1)[1]))
        return EngineResult.chat("ok", prompt_tokens=1, completion_tokens=1, model=job.model)

    async def cancel(self, job_id: str) -> None:
        return None


def create_engine(models: Sequence[str]) -> NoopEngine:
    return NoopEngine(models)
