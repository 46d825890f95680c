"""`gtmon sandbox` keeps its files in a directory of its own and never resumes a checkpoint
that an earlier sandbox (an earlier emulator) wrote."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from monitor.sandbox import CHECKPOINT_FILE, LOG_FILE, SandboxOptions, prepare_state_dir, sandbox_config


def test_default_state_dir_is_a_new_temporary_directory_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = prepare_state_dir(None), prepare_state_dir(None)
    try:
        assert first != second
        for state in (first, second):
            assert state.is_dir() and state.parent == Path(tempfile.gettempdir())
        assert list(tmp_path.iterdir()) == []  # nothing in the working directory
    finally:
        first.rmdir()
        second.rmdir()


def test_a_checkpoint_left_by_an_earlier_sandbox_is_deleted_and_the_log_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / CHECKPOINT_FILE).write_text('{"shards": {"old-emulator-shard": "123"}}')
    (state / LOG_FILE).write_text("earlier run\n")
    assert prepare_state_dir(str(state)) == state
    assert not (state / CHECKPOINT_FILE).exists()
    assert (state / LOG_FILE).read_text() == "earlier run\n"


def test_a_missing_state_dir_is_created(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    assert prepare_state_dir(str(state)).is_dir()


def test_the_monitor_checkpoints_into_the_state_dir(tmp_path: Path) -> None:
    config = sandbox_config(SandboxOptions(), "http://127.0.0.1:8000", tmp_path)
    assert Path(config.streams.checkpoint_path) == tmp_path / CHECKPOINT_FILE
