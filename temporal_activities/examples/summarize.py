"""An existing workflow gains an LLM step in three lines.

    python -m temporal_activities.worker --task-queue llm --bridge-listen 127.0.0.1:8090 \\
        --workflow temporal_activities.examples.summarize:SummarizeWorkflow
    await client.execute_workflow(SummarizeWorkflow.run, SummarizeRequest(text="..."),
                                  id="summarize-1", task_queue="llm")
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():  # 1. import (outside the sandbox, as for any library)
    from overnight import LLMCall
    from temporal_activities import CompletionMode, llm_step

__all__ = ["SummarizeRequest", "SummarizeResult", "SummarizeWorkflow"]


class SummarizeRequest(BaseModel):
    text: str
    instruction: str = "Summarize in one sentence:"
    """Put before ``text`` in the prompt; empty sends ``text`` alone."""
    model: str = "smollm2-135m"
    max_tokens: int = 48
    mode: CompletionMode = "async"
    timeout: timedelta = timedelta(hours=24)


class SummarizeResult(BaseModel):
    summary: str
    job_id: str
    resumed_at: str
    """``workflow.now()`` right after the step returned (ISO 8601): when the workflow resumed."""


@workflow.defn
class SummarizeWorkflow:
    @workflow.run
    async def run(self, request: SummarizeRequest) -> SummarizeResult:
        call = LLMCall(model=request.model, max_tokens=request.max_tokens, temperature=0.0)  # 2. build the call
        call.add_user_message(f"{request.instruction}\n\n{request.text}" if request.instruction else request.text)
        job = await llm_step(call, mode=request.mode, timeout=request.timeout)  # 3. await the step
        return SummarizeResult(summary=job.text or "", job_id=job.id, resumed_at=workflow.now().isoformat())
