"""Runner processes for a test: started ready, stopped by pid whatever happens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mabeam.core.config import Config
from mabeam.testing.processes import RunnerProcess

__all__ = ["runners_of"]


@contextlib.contextmanager
def runners_of(
    config: Config, names: Sequence[str], *, log_dir: Path | None = None, **options: Any
) -> Iterator[dict[str, RunnerProcess]]:
    """Start one `RunnerProcess(config, name, **options)` per name and wait until each is ready
    (its log in `log_dir/<name>.log` when given); kill every one started when the block ends."""
    started: dict[str, RunnerProcess] = {}
    try:
        for name in names:
            log_path = log_dir / f"{name}.log" if log_dir is not None else None
            started[name] = RunnerProcess(config, name, log_path=log_path, **options).wait_ready()
        yield started
    finally:
        for runner in started.values():
            runner.kill()
