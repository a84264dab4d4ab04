"""Sweeps: launchers, arms and the report."""
