"""Shared test helpers: configs (config.py) and runners (runs.py). Test files import these, never each other."""
