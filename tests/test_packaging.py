"""A production install carries no emulator: what pyproject.toml, constraints.txt and the
daemon's imports promise, checked without installing anything.

The install itself (a fresh venv, `pip install -c constraints.txt .`, no moto, flask or rich,
`gtmon run --help` works, `gtmon sandbox` names the extra) takes about a minute here, so it is
`bench/install.py --quick`, which .ci/run runs after the suite.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def test_runtime_dependencies_hold_no_emulator_or_terminal_ui() -> None:
    names = {_name(Requirement(r)) for r in PROJECT["dependencies"]}
    assert not names & {"moto", "flask", "werkzeug", "rich"}


def test_sandbox_extra_holds_pinned_moto_and_the_test_extra_pulls_it() -> None:
    sandbox = {_name(Requirement(r)): Requirement(r) for r in PROJECT["optional-dependencies"]["sandbox"]}
    assert str(sandbox["moto"].specifier) == "==5.2.1" and "server" in sandbox["moto"].extras
    assert "rich" in sandbox
    # `.ci/run` installs '.[test]' and the tests start the emulator and the sandbox.
    test = [Requirement(r) for r in PROJECT["optional-dependencies"]["test"]]
    assert any(_name(r) == "gtmon" and "sandbox" in r.extras for r in test)


def test_major_version_upper_bounds_on_the_libraries_whose_next_major_breaks_us() -> None:
    runtime = {_name(Requirement(r)): Requirement(r) for r in PROJECT["dependencies"]}
    for name, next_major in (("aioboto3", "16"), ("apscheduler", "4"), ("pydantic", "3")):
        assert not runtime[name].specifier.contains(next_major), name


def test_constraints_pin_every_runtime_dependency_inside_its_range() -> None:
    pins = _constraints()
    for text in PROJECT["dependencies"]:
        requirement = Requirement(text)
        version = pins.get(_name(requirement))
        assert version is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} not in {text}"
    assert not pins.keys() & {"moto", "flask", "werkzeug", "rich"}


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_daemon_commands_import_nothing_of_the_emulator() -> None:
    # moto, flask and werkzeug are installed here (the test extra): they must still not load.
    # rich is left out: structlog.dev imports it whenever it is installed.
    done = _python(
        "import contextlib, io, sys\n"
        "import monitor.cli, monitor.service, monitor.check, monitor.cost, monitor.canary.table\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    monitor.cli.main(['run', '--help'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'moto', 'flask', 'werkzeug'}))\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_sandbox_commands_without_the_extra_name_it_in_one_line() -> None:
    # sys.modules[name] = None is how Python marks a module as not importable: find_spec
    # answers None and `import` raises, as in an install without the extra.
    for command in (["sandbox"], ["emulator"], ["fault", "clear"]):
        done = _python(
            "import sys\n"
            "sys.modules['moto'] = None\n"
            "import monitor.cli\n"
            "sys.exit(monitor.cli.main(sys.argv[1:]))\n",
            *command,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert lines == [
            f"gtmon: `gtmon {command[0]}` needs the sandbox extra (moto not installed): "
            "pip install 'gtmon[sandbox]'"
        ]
