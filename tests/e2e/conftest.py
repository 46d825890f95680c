"""End-to-end tests: real processes (gtmon sandbox, Prometheus) on loopback ports.

The helpers of tests/deploy (finding system tools such as `prometheus`, with a
failure that names deploy/ci-system-deps.sh when one is missing) are reused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
