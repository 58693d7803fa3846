"""Triggers: ``overnight.LLMJobTrigger``."""
