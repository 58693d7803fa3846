"""Hooks: ``overnight.OvernightHook``."""
