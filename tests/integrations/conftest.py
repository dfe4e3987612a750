"""Run LangChain's async standard tests (plain ``async def`` methods) under pytest-asyncio.

LangChain's own repositories run pytest-asyncio in auto mode; this project keeps the default
strict mode, so coroutine tests collected in this folder are marked ``asyncio`` here, before
pytest-asyncio looks for the mark (this wrapper runs inside its own).
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[Any]:
    outcome = yield
    if not Path(str(collector.path)).resolve().is_relative_to(HERE):
        return
    result = outcome.get_result()
    items = result if isinstance(result, list) else [result]
    for item in items:
        function = getattr(item, "obj", None)
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(function)
            and item.get_closest_marker("asyncio") is None
        ):
            item.add_marker(pytest.mark.asyncio)
