"""Importing one bench/*.py script as a module, for tests of its pure parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as the module `gtmon_bench_<name>`; bench/ is on the path while it
    loads (the scripts import their siblings, such as _common)."""
    saved = list(sys.path)
    try:
        sys.path.insert(0, str(BENCH))
        spec = importlib.util.spec_from_file_location(f"gtmon_bench_{name}", BENCH / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
