"""Concurrency across jobs: every frame's paid stages, at most `replicate.concurrency` predictions in flight.

`Engine` (engine.py) is the whole of it for the rest of shd; its docstring maps the modules behind it.
"""

from shd.scheduler.dispatch import Task
from shd.scheduler.engine import Engine

__all__ = ["Engine", "Task"]
