"""Which allocator the daemon's memory goes through, and a warning when it is a poor choice.

A long fault makes gtmon hold state: records waiting for a paused link's target to show
them, canaries waiting to land. CPython's own allocator (pymalloc) keeps a 1 MiB arena
while any object in it lives, so after the fault the process stays at the fault's
high-water mark: bench/fault_memory.py measured +6.9 MB over one 90 s outage and one
5-minute pause, and bench/soak.py +8.6 % over an hour of faults, flat once every fault kind
had been met. jemalloc, preloaded with every allocation routed through it
(`PYTHONMALLOC=malloc`), returns those pages over the minutes after (+2.5 % over an hour);
the container image and the systemd unit run the daemon that way. Half the setting does
not do it: jemalloc alone only serves CPython's blocks over 512 bytes, and
`PYTHONMALLOC=malloc` alone puts every object through glibc's malloc, which held more than
pymalloc on bench/fault_memory.py's schedule (one run: 4.4 MB more before the faults, 2.6
MB more after). Both cases are logged at start, so a half-applied setting shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Allocator:
    """`name`: "jemalloc", "pymalloc" or "malloc" (glibc's); `warning`: why it is a poor
    choice for a long-lived daemon, or None."""

    name: str
    warning: str | None = None


def current_allocator(
    maps: Path = Path("/proc/self/maps"), environ: Mapping[str, str] = os.environ
) -> Allocator:
    """The allocator Python's objects go through in this process (Linux; elsewhere, where
    there is no /proc, whatever PYTHONMALLOC says)."""
    try:
        jemalloc = "libjemalloc" in maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        jemalloc = False
    # PYTHONMALLOC: malloc, malloc_debug, pymalloc, pymalloc_debug, debug or default.
    system_malloc = environ.get("PYTHONMALLOC", "").startswith("malloc")
    if jemalloc and system_malloc:
        return Allocator("jemalloc")
    if jemalloc:
        return Allocator(
            "pymalloc",
            "jemalloc is preloaded but PYTHONMALLOC is not 'malloc': Python's objects still "
            "go through pymalloc, which keeps a long fault's memory; set PYTHONMALLOC=malloc",
        )
    if system_malloc:
        return Allocator(
            "malloc",
            "PYTHONMALLOC=malloc without jemalloc puts every object through glibc's malloc, "
            "which holds more memory than pymalloc; preload libjemalloc.so.2 "
            "(LD_PRELOAD) or unset PYTHONMALLOC",
        )
    return Allocator("pymalloc")
