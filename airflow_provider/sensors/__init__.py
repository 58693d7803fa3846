"""Sensors: ``overnight.LLMJobSensor``."""
