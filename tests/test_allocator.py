"""The allocator the daemon runs with: jemalloc as the image and the unit set it up, and a
warning when only half of that setting is in effect."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from monitor.allocator import current_allocator
from tests.test_cli import free_port, get_json, gtmon, interrupt, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def maps_file(tmp_path: Path, *libraries: str) -> Path:
    lines = ["5581d4a2e000-5581d4a30000 r--p 00000000 08:01 123 /usr/bin/python3.11"]
    lines += [f"7f0c1c000000-7f0c1c040000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/{lib}"
              for lib in libraries]
    path = tmp_path / "maps"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jemalloc_counts_only_with_every_allocation_routed_through_it(tmp_path):
    preloaded = maps_file(tmp_path, "libjemalloc.so.2")
    assert current_allocator(preloaded, {"PYTHONMALLOC": "malloc"}).name == "jemalloc"
    assert current_allocator(preloaded, {"PYTHONMALLOC": "malloc"}).warning is None
    half = current_allocator(preloaded, {})
    assert half.name == "pymalloc"
    assert half.warning is not None and "PYTHONMALLOC" in half.warning


def test_system_malloc_without_jemalloc_is_named_with_a_warning(tmp_path):
    plain = maps_file(tmp_path, "libc.so.6")
    glibc = current_allocator(plain, {"PYTHONMALLOC": "malloc_debug"})
    assert glibc.name == "malloc"
    assert glibc.warning is not None and "libjemalloc.so.2" in glibc.warning
    assert current_allocator(plain, {}) == current_allocator(plain, {"PYTHONMALLOC": "pymalloc"})
    assert current_allocator(plain, {}).name == "pymalloc"
    assert current_allocator(plain, {}).warning is None


def test_without_proc_the_environment_decides(tmp_path):
    assert current_allocator(tmp_path / "absent", {"PYTHONMALLOC": "malloc"}).name == "malloc"


def deployment_environment() -> dict[str, str]:
    """The allocator variables the image sets, checked equal to the unit's."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    image = dict(re.findall(r"\b(LD_PRELOAD|PYTHONMALLOC)=(\S+)", dockerfile))
    unit = (DEPLOY / "systemd" / "gtmon.service").read_text()
    systemd = dict(re.findall(r"^Environment=(LD_PRELOAD|PYTHONMALLOC)=(\S+)$", unit, re.M))
    assert image == systemd == {"LD_PRELOAD": "libjemalloc.so.2", "PYTHONMALLOC": "malloc"}
    return image


def test_the_daemon_runs_on_jemalloc_with_the_deployment_files_settings(tmp_path):
    env = os.environ | deployment_environment()
    port, metrics_port = free_port(), free_port()
    emulator = subprocess.Popen(
        gtmon("emulator", "--port", str(port)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    daemon: subprocess.Popen[str] | None = None
    try:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"regions: [us-east-1, eu-west-1]\naws: {{endpoint_url: 'http://127.0.0.1:{port}'}}\n"
            f"streams: {{enabled: false}}\nmetrics: {{host: 127.0.0.1, port: {metrics_port}}}\n"
            "log: {format: json}\n"
        )
        wait_until(lambda: get_json(f"http://127.0.0.1:{port}/gtmon/health"), 30, "emulator")
        assert subprocess.run(gtmon("init", "--config", str(config)), capture_output=True,
                              timeout=60).returncode == 0
        daemon = subprocess.Popen(gtmon("run", "--config", str(config)), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        status = wait_until(lambda: get_json(f"http://127.0.0.1:{metrics_port}/api/status"),
                            30, "the daemon's status")
        assert status["allocator"] == "jemalloc"
        interrupt(daemon)
        _, stderr = daemon.communicate(timeout=10)
        started = [json.loads(line) for line in stderr.splitlines() if '"event": "started"' in line]
        assert [line["allocator"] for line in started] == ["jemalloc"], stderr
        assert '"event": "allocator"' not in stderr
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        interrupt(emulator)


def test_half_of_the_setting_is_reported_in_a_real_process():
    probe = ("from monitor.allocator import current_allocator as c; a = c(); "
             "print(a.name, a.warning is not None)")
    preload_only = os.environ | {"LD_PRELOAD": "libjemalloc.so.2"}
    preload_only.pop("PYTHONMALLOC", None)
    out = subprocess.run([sys.executable, "-c", probe], env=preload_only, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["pymalloc", "True"], out.stderr
