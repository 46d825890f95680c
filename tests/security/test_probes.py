"""Health probes with TLS and basic auth on: the shipped probes work with the documented web
config. Before, /healthz and /readyz answered 401, so the Kubernetes probes and the
container HEALTHCHECK failed and the pod restarted in a loop.

`gtmon health` (the Dockerfile's HEALTHCHECK) runs as a real subprocess; the Kubernetes
probes are played as the kubelet plays them (an HTTPS GET that checks no certificate and
sends no credentials); the last test runs the real daemon with the documented web config.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml

from monitor.webconfig import load_web_config
from tests.security.conftest import PASSWORD, Pki, ServeFactory, WebConfigWriter, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "deploy" / "kubernetes" / "web-config"


def gtmon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def kubelet_get(url: str) -> int:
    """What an httpGet probe with `scheme: HTTPS` does: no certificate check, no credentials."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK [^\n]*\n\s+CMD (\[[^\n]+\])$", text, re.M)
    assert match, "no HEALTHCHECK ... CMD [...] in deploy/Dockerfile"
    return list(json.loads(match.group(1)))


def config_for(tmp_path: Path, port: int, web: Path | None, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    web_file = f", web_config_file: '{web}'" if web else ""
    metrics = f"metrics: {{host: 0.0.0.0, port: {port}{web_file}}}\n"
    path.write_text("regions: [us-east-1, eu-west-1]\n" + metrics + extra)
    return path


def health_command(config: Path, *extra: str) -> list[str]:
    """The Dockerfile's HEALTHCHECK, with the test's config in place of /etc/gtmon/config.yaml."""
    command = dockerfile_healthcheck()
    assert command[:2] == ["gtmon", "health"], command
    return [arg.replace("/etc/gtmon/config.yaml", str(config)) for arg in command[1:]] + list(extra)


async def test_the_dockerfile_healthcheck_passes_with_tls_and_basic_auth(
    serve: ServeFactory, write_web_config: WebConfigWriter, tmp_path: Path, hash4: str
) -> None:
    web = write_web_config(tls={}, users={"prometheus": hash4})
    ready = {"now": False}
    served = await serve(web, ready=lambda: ready["now"])
    config = config_for(tmp_path, served.port, web)
    done = await asyncio.to_thread(gtmon, *health_command(config))
    assert done.returncode == 0, done.stderr
    assert f"OK https://127.0.0.1:{served.port}/healthz" in done.stdout
    not_ready = await asyncio.to_thread(gtmon, *health_command(config, "--ready"))
    assert not_ready.returncode == 1 and "503" in not_ready.stderr
    ready["now"] = True
    assert (await asyncio.to_thread(gtmon, *health_command(config, "--ready"))).returncode == 0


async def test_health_fails_in_one_line_when_nothing_answers(tmp_path: Path) -> None:
    config = config_for(tmp_path, free_port(), None)
    done = await asyncio.to_thread(gtmon, "health", "--config", str(config), "--timeout", "2")
    assert done.returncode == 1  # Docker: 1 is unhealthy (2 is reserved)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    broken = await asyncio.to_thread(gtmon, "health", "--config", str(tmp_path / "missing.yaml"))
    assert broken.returncode == 1 and "cannot read" in broken.stderr


async def test_health_presents_a_client_certificate_when_the_server_requires_one(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki, tmp_path: Path
) -> None:
    web = write_web_config(
        tls={"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki.ca.path)}
    )
    served = await serve(web)
    config = config_for(tmp_path, served.port, web)
    without = await asyncio.to_thread(gtmon, "health", "--config", str(config))
    assert without.returncode == 1
    with_cert = await asyncio.to_thread(
        gtmon,
        *("health", "--config", str(config), "--cafile", str(pki.ca.path)),
        *("--cert", str(pki.client.cert), "--key", str(pki.client.key)),
    )
    assert with_cert.returncode == 0, with_cert.stderr


async def test_kubernetes_probes_work_with_the_components_web_config(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki, tmp_path: Path
) -> None:
    # The component's example web config, with this test's certificate, key and a real hash.
    example = yaml.safe_load((COMPONENT / "web-config.example.yml").read_text())
    shutil.copy(pki.server.cert, tmp_path / example["tls_server_config"]["cert_file"])
    shutil.copy(pki.server.key, tmp_path / example["tls_server_config"]["key_file"])
    example["basic_auth_users"] = {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}
    web = write_web_config(text=yaml.safe_dump(example))
    served = await serve(web, ready=lambda: True)
    patch = yaml.safe_load((COMPONENT / "deployment-patch.yaml").read_text())
    schemes = {op["path"].split("/")[-3]: op["value"] for op in patch if op["path"].endswith("/scheme")}
    assert schemes == {"startupProbe": "HTTPS", "livenessProbe": "HTTPS", "readinessProbe": "HTTPS"}
    base = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    container = base["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert "httpHeaders" not in container[probe]["httpGet"]  # no credentials in the manifest
        status = await asyncio.to_thread(kubelet_get, f"https://127.0.0.1:{served.port}{path}")
        assert status == 200, (probe, status)
    assert await asyncio.to_thread(kubelet_get, f"https://127.0.0.1:{served.port}/metrics") == 401
    assert load_web_config(web).headers  # the example's headers load


@pytest.mark.timeout(180)
def test_the_daemon_with_tls_and_basic_auth_passes_its_probes(
    write_web_config: WebConfigWriter, pki: Pki, tmp_path: Path, hash4: str
) -> None:
    emulator_port, port = free_port(), free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "monitor", "emulator", "--port", str(emulator_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    daemon: subprocess.Popen[str] | None = None
    try:
        web = write_web_config(tls={}, users={"prometheus": hash4})
        config = config_for(
            tmp_path,
            port,
            web,
            f"aws: {{endpoint_url: 'http://127.0.0.1:{emulator_port}'}}\n"
            "canary: {interval_seconds: 0.5}\nstreams: {enabled: false}\n",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{emulator_port}/gtmon/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.3)
        init = gtmon("init", "--config", str(config), timeout=120)
        assert init.returncode == 0, init.stderr
        daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while (ready := gtmon(*health_command(config, "--ready"))).returncode != 0:
            assert daemon.poll() is None, daemon.communicate(timeout=5)[1][-2000:]
            assert time.monotonic() < deadline, ready.stderr
            time.sleep(0.5)
        assert "https://" in ready.stdout
        assert kubelet_get(f"https://127.0.0.1:{port}/metrics") == 401
        context = pki.client_context()
        request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
        token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            assert b"gtmon_canary_operations_total" in answer.read()
    finally:
        for process in (daemon, emulator):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
