"""Deployment-file tests: helpers live in deploy_helpers.py (imported by name,
since this directory is on sys.path under pytest's default import mode)."""

import sys
from pathlib import Path

# Make `import deploy_helpers` work whatever the import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
