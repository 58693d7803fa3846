"""Operators: ``llm_job.LLMJobOperator`` (one call) and ``llm_batch.LLMBatchOperator`` (a bulk batch)."""
