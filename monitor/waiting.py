"""Waiting for an event with a deadline, without losing a cancellation.

On Python 3.11, `asyncio.wait_for` can swallow a `cancel()` that arrives just as
the awaited event fires (CPython gh-86296): a task looping on it then never
stops, and shutdown hangs. `asyncio.timeout` does not have that flaw, so every
loop in gtmon that sleeps "until woken or until the deadline" goes through here.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
