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


# ---- "did you mean" and `config validate --config` ------------------------------------


def test_a_misspelt_field_gets_the_closest_known_one_at_its_own_level(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "regions: [us-east-1]\n"
        "canary: {interval_secs: 5}\n"
        "tables: [{name: Orders, conflict: {}}, {name: Other, conflicts: {writer_atribute: X}}]\n"
        "metrics: {prot: 9}\n"
        "zzz: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 5 problem(s) in the configuration:"
    assert "  canary.interval_secs: unknown field; did you mean 'interval_seconds'?" in "\n".join(lines)
    assert "tables[0].conflict: unknown field; did you mean 'conflicts'?" in lines[2]
    assert "tables[1].conflicts.writer_atribute: unknown field; did you mean 'writer_attribute'?" in lines[3]
    assert "metrics.prot: unknown field; did you mean 'port'?" in lines[4]
    # Nothing close: no guess, the example file instead.
    assert lines[5] == "  zzz: unknown field (check the spelling; see config/example.yaml)"


@pytest.mark.parametrize("args", [["--config", "{path}"], ["{path}"]])
def test_config_validate_takes_the_file_as_config_like_every_command(args, capsys):
    from monitor.cli import main

    path = str(ROOT / "config" / "example.yaml")
    assert main(["config", "validate", *(a.format(path=path) for a in args)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK (3 regions")


def test_config_validate_without_a_file_or_with_two_says_so_in_one_line(capsys):
    from monitor.cli import main

    assert main(["config", "validate"]) == 2
    assert capsys.readouterr().err == (
        "gtmon: config validate: give the file to check: gtmon config validate --config FILE\n"
    )
    assert main(["config", "validate", "a.yaml", "--config", "b.yaml"]) == 2
    assert "give the file once" in capsys.readouterr().err
