#!/usr/bin/env bash
# Install the system packages that gtmon's deployment tests need:
# promtool and prometheus (Debian package "prometheus"), amtool
# (Debian package "prometheus-alertmanager") and systemd-analyze (Debian
# package "systemd", to verify deploy/systemd/gtmon.service), headless
# Chromium (Debian package "chromium", for the status page's screenshots in
# tests/test_status_page.py) and jemalloc (Debian package "libjemalloc2", which
# the image and the unit preload: tests/test_allocator.py runs a daemon with it).
#
# Idempotent: does nothing when the tools are already on PATH. Needs root
# (or sudo) only when something is missing. Called by .ci/run.
set -euo pipefail

missing=()
for tool in promtool prometheus; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing+=(prometheus)
        break
    fi
done
if ! command -v amtool >/dev/null 2>&1; then
    missing+=(prometheus-alertmanager)
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    missing+=(systemd)
fi
if ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi
has_jemalloc() {
    compgen -G '/usr/lib/*/libjemalloc.so.2' >/dev/null || compgen -G '/usr/lib/libjemalloc.so.2' >/dev/null
}
if ! has_jemalloc; then
    missing+=(libjemalloc2)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ci-system-deps: promtool, prometheus, amtool, systemd-analyze, chromium and jemalloc already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "ci-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "ci-system-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
# --no-install-recommends keeps the install small; the packages' services are
# not started in containers without systemd, and are not needed.
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for tool in promtool prometheus amtool systemd-analyze chromium; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "ci-system-deps: $tool still missing after install" >&2
        exit 1
    }
done
has_jemalloc || {
    echo "ci-system-deps: libjemalloc.so.2 still missing after install" >&2
    exit 1
}
promtool --version | head -n 1
