"""The service log is one JSON object per line, whoever writes it."""

from __future__ import annotations

import io
import json
import logging

import structlog

from monitor.logs import configure_logging


def test_library_errors_through_the_standard_library_are_json_lines_with_their_traceback() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    try:
        configure_logging("json", stream=out)
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            logging.getLogger("apscheduler.executors.default").exception("Job raised an exception")
        logging.getLogger("apscheduler.scheduler").warning("below ERROR: kept out")
        structlog.get_logger("gtmon").info("ours", region="us-east-1")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["Job raised an exception", "ours"]
    library = lines[0]
    assert library["level"] == "error" and library["logger"] == "apscheduler.executors.default"
    assert "ZeroDivisionError: boom" in library["exception"] and "timestamp" in library
