"""Emulator tests: real clients over HTTP against the session emulator.

Helpers live in emu_helpers.py (imported by name; this directory is put on
sys.path here so that works whatever pytest's import mode).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))



