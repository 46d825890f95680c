"""`gtmon config validate` catches up front what used to fail later, and `gtmon run` refuses
it before starting anything: one line per problem, the file and the field named, no
traceback. Each case runs the real command line in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import Pki, WebConfigWriter

ROOT = Path(__file__).resolve().parents[2]
BASE = "regions: [us-east-1, eu-west-1]\n"


def gtmon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def assert_refused(done: subprocess.CompletedProcess[str], path: Path, *expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert str(path) in done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("aws: {endpoint_url: 'not a url'}\n", "aws.endpoint_url", "spaces"),
        ("aws: {endpoint_url: 'localhost:8000'}\n", "aws.endpoint_url", "http:// or https://"),
        ("aws: {endpoint_url: 'http://127.0.0.1:99999'}\n", "aws.endpoint_url", "port"),
        ("aws: {endpoint_url: 'http://user:pw@host'}\n", "aws.endpoint_url", "credentials"),
        ("tables: [{name: 'Orders/../x; DROP'}]\n", "tables[0].name", "DynamoDB table name"),
        ("tables: [{name: 'my orders'}]\n", "tables[0].name", "DynamoDB table name"),
        ("tables: [{name: ab}]\n", "tables[0].name", "3 to 255"),
        ("canary: {table: 'gtmon canary'}\n", "canary.table", "DynamoDB table name"),
        ("canary: {ttl_seconds: 100000000000000000000000000000000000000000}\n", "canary.ttl_seconds", "less"),
        ("canary: {stall_seconds: .inf}\n", "canary.stall_seconds", "finite"),
        ("canary: {timeout_seconds: 1e400}\n", "canary.timeout_seconds", "finite"),
        ("canary: {warning_seconds: .nan}\n", "canary.warning_seconds", "finite"),
        ("streams: {settle_seconds: .inf}\n", "streams.settle_seconds", "finite"),
        ("tables: [{name: Orders, conflicts: {version_attribute: ''}}]\n", "version_attribute", "1 to 255"),
        ("metrics: {host: 'not a host!'}\n", "metrics.host", "neither an IP address"),
        ("metrics: {max_connections: 0}\n", "metrics.max_connections", "greater"),
    ],
)
def test_config_validate_refuses_what_would_fail_later(
    tmp_path: Path, text: str, field: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + text)
    done = gtmon("config", "validate", str(path))
    assert_refused(done, path, field, expected)


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02\x03binary\xff", b"regions: [us-east-1]\n# caf\xe9 in latin-1\n", b"a: b\x00c\n"],
    ids=["binary", "latin-1", "nul"],
)
def test_a_binary_or_non_utf8_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    done = gtmon("config", "validate", str(path))
    assert_refused(done, path)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_web_config_that_cannot_be_loaded_fails_validate(
    tmp_path: Path, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    config = tmp_path / "config.yaml"
    cases = [
        (tmp_path / "missing.yml", "cannot read the web config"),
        (write_web_config(tls={"key_file": str(pki.client.key)}), "is not the key of cert_file"),
    ]
    for web, expected in cases:
        config.write_text(BASE + f"metrics: {{web_config_file: '{web}'}}\n")
        done = gtmon("config", "validate", str(config))
        assert_refused(done, web, expected)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_validate_summarises_a_good_web_config(
    tmp_path: Path, write_web_config: WebConfigWriter, pki: Pki, hash4: str
) -> None:
    web = write_web_config(
        tls={"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki.ca.path)},
        users={"prometheus": hash4},
    )
    config = tmp_path / "config.yaml"
    config.write_text(BASE + f"metrics: {{web_config_file: '{web}'}}\n")
    done = gtmon("config", "validate", str(config))
    assert done.returncode == 0, done.stderr
    assert "TLS, client certificates (RequireAndVerifyClientCert), 1 basic auth user(s)" in done.stdout


def test_run_refuses_a_bad_endpoint_before_starting_anything(tmp_path: Path) -> None:
    # Before: `gtmon run` crashed with a traceback from botocore.
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "aws: {endpoint_url: 'htp:/oops'}\nmetrics: {port: 0}\n")
    done = gtmon("run", "--config", str(path))
    assert_refused(done, path, "aws.endpoint_url")
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "metrics: {port: 0}\n")
    done = gtmon("run", "--config", str(good), "--endpoint", "not a url")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--endpoint" in done.stderr and "spaces" in done.stderr


def test_run_refuses_a_broken_web_config_before_starting_anything(
    tmp_path: Path, write_web_config: WebConfigWriter
) -> None:
    # Before: reported at start as a problem with the port.
    web = write_web_config(text="tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n")
    path = tmp_path / "config.yaml"
    path.write_text(BASE + f"metrics: {{port: 0, web_config_file: '{web}'}}\n")
    done = gtmon("run", "--config", str(path))
    assert_refused(done, web, "tls_server_config.cert_file", "no such file")
    assert "port" not in done.stderr
