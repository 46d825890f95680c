#!/usr/bin/env bash
# Fetch the test suite of the moto release gtmon pins (pyproject.toml: moto[server]==X) from
# its PyPI sdist, which carries tests/, into a cache directory, unless it is already there.
# Idempotent: CI calls it on every run.
#
# Why: bench/moto_suite.py runs moto's own DynamoDB and DynamoDB Streams tests in moto's
# server mode against `gtmon emulator` and against `moto_server`, and compares them test by
# test; tests/emulator/test_moto_suite.py runs it in CI. Nothing is downloaded at test time:
# the test FAILS (never skips) when the suite is missing, with a message naming this script.
#
# Usage: scripts/ci-moto-tests.sh        # fetches if needed, prints the suite's directory
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="$(sed -n 's/.*"moto\[server\]==\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)"
[ -n "$VERSION" ] || { echo "no moto[server]==X pin found in pyproject.toml" >&2; exit 1; }
CACHE="${GTMON_MOTO_TESTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gtmon/moto-tests}"
SUITE="$CACHE/moto-$VERSION"

if [ -f "$SUITE/tests/test_dynamodb/test_dynamodb.py" ] && [ -f "$SUITE/pyproject.toml" ]; then
    echo "$SUITE"
    exit 0
fi

mkdir -p "$CACHE"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
# The system Python's pip, else a throwaway venv's (the README's test command needs venv anyway).
pip=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
    python3 -m venv "$download/venv"
    pip=("$download/venv/bin/python" -m pip)
fi
# --no-binary: the sdist (the wheel has no tests); --no-deps: nothing else is fetched.
"${pip[@]}" download --quiet --no-deps --no-binary :all: --dest "$download" "moto==$VERSION" >&2
archive="$download/moto-$VERSION.tar.gz"
[ -f "$archive" ] || { echo "pip did not fetch moto-$VERSION.tar.gz" >&2; exit 1; }
# Only what the suite needs: the test packages, their shared helpers and the pytest config.
rm -rf "$SUITE.partial"
mkdir -p "$SUITE.partial"
tar -xzf "$archive" -C "$SUITE.partial" --strip-components=1 \
    "moto-$VERSION/pyproject.toml" "moto-$VERSION/tests/__init__.py" "moto-$VERSION/tests/conftest.py" \
    "moto-$VERSION/tests/markers.py" "moto-$VERSION/tests/test_dynamodb" \
    "moto-$VERSION/tests/test_dynamodbstreams"
rm -rf "$SUITE"
mv "$SUITE.partial" "$SUITE"
echo "$SUITE"
