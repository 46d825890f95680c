"""Every option and subcommand of `gtmon` says what it is for in `--help`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from monitor.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: str = "gtmon"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _undocumented(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if choice.help}
            yield from (f"{path} {name}" for name in action.choices if name not in described)
        elif not action.help or action.help == argparse.SUPPRESS:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_and_subcommand_has_help_text() -> None:
    parsers = dict(_parsers(build_parser()))
    assert {"gtmon run", "gtmon fault outage", "gtmon config validate"} <= parsers.keys()
    missing = [item for path, parser in parsers.items() for item in _undocumented(parser, path)]
    assert missing == []


def test_the_walk_finds_an_option_and_a_subcommand_without_help() -> None:
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--quiet-one")
    commands = parser.add_subparsers()
    commands.add_parser("silent").add_argument("--also")
    found = [item for path, sub in _parsers(parser, "x") for item in _undocumented(sub, path)]
    assert found == ["x --quiet-one", "x silent", "x silent --also"]
