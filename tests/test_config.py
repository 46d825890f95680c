"""Configuration: shipped files validate, and a bad file names the file, field and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["example.yaml", "sandbox.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(ROOT / "config" / name)
    assert config.regions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("regions: [us-east-1]\ncanary: {interval_seconds: -1}\n", "canary.interval_seconds"),
        ("regions: [us-east-1]\nlog: {format: xml}\n", "must be one of"),
        ("regions: [useast1]\n", "regions[0]"),
        ("regions: [us-east-1]\ntables: [{name: Orders, regions: [eu-west-1]}]\n", "eu-west-1"),
        ("regions: [us-east-1]\ncanray: {}\n", "canray: unknown field"),
        ("tables: []\n", "regions: required field is missing"),
        ("regions: [us-east-1\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("regions: [us-east-1]\ntables: [{name: Orders, canary_key: {pk: fixed}}]\n", "{source}"),
        ("regions: [us-east-1]\naws: {endpoint_url: 'not a url'}\n", "aws.endpoint_url"),
        ("regions: [us-east-1]\ntables: [{name: 'Orders/../x; DROP'}]\n", "DynamoDB table name"),
        ("regions: [us-east-1]\ncanary: {ttl_seconds: 100000000000000000000000000000000000000}\n", "ttl"),
        ("regions: [us-east-1]\ncanary: {stall_seconds: .inf}\n", "finite number"),
    ],
)
def test_a_bad_config_names_the_file_the_field_and_what_is_allowed(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_config_validate_prints_the_problem_without_a_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("regions: [us-east-1]\ncanary: {interval_seconds: fast}\n")
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "canary.interval_seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_binary_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "binary" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_reported_plainly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr
