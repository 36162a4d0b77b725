"""Logging: a console handler, a log file in the log dir, a TRACE level below DEBUG."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.logging_setup import LEVELS, LOG_FILE_NAME, TRACE, configure_logging


@pytest.fixture
def hoshikage_logger() -> Iterator[logging.Logger]:
    """The 'hoshikage' logger, restored (and its new handlers closed) after the test."""
    logger = logging.getLogger("hoshikage")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def file_handlers(logger: logging.Logger) -> list[logging.FileHandler]:
    return [h for h in logger.handlers if isinstance(h, logging.FileHandler)]


def test_trace_level_exists() -> None:
    assert TRACE == 5
    assert TRACE < logging.DEBUG
    assert logging.getLevelName(TRACE) == "TRACE"
    assert logging.getLevelName("TRACE") == TRACE
    assert LEVELS["trace"] == TRACE
    assert set(LEVELS) == {"trace", "debug", "info", "warn", "error"}


def test_log_file_is_written_in_the_given_dir(
    tmp_path: Path, hoshikage_logger: logging.Logger
) -> None:
    log_dir = tmp_path / "logs" / "nested"
    path = configure_logging("warn", log_dir)
    assert path == log_dir / LOG_FILE_NAME
    logging.getLogger("hoshikage.test").info("model loaded in %.1f s", 0.5)
    logging.getLogger("hoshikage.test").debug("not recorded at warn")
    for handler in hoshikage_logger.handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert "INFO hoshikage.test: model loaded in 0.5 s" in text  # the file records info
    assert "not recorded" not in text


def test_trace_messages_reach_the_file_at_trace_level(
    tmp_path: Path, hoshikage_logger: logging.Logger
) -> None:
    path = configure_logging("trace", tmp_path)
    assert path is not None
    assert hoshikage_logger.level == TRACE
    logging.getLogger("hoshikage.engine").log(TRACE, "token %d", 42)
    for handler in hoshikage_logger.handlers:
        handler.flush()
    assert "TRACE hoshikage.engine: token 42" in path.read_text(encoding="utf-8")


def test_without_a_log_dir_no_file_is_written(hoshikage_logger: logging.Logger) -> None:
    assert configure_logging("info", None) is None
    assert file_handlers(hoshikage_logger) == []
    assert len(hoshikage_logger.handlers) == 1


def test_reconfiguring_does_not_duplicate_handlers(
    tmp_path: Path, hoshikage_logger: logging.Logger
) -> None:
    configure_logging("info", tmp_path)
    first = list(hoshikage_logger.handlers)
    configure_logging("debug", tmp_path)
    path = configure_logging("warn", tmp_path)
    assert path is not None
    assert len(hoshikage_logger.handlers) == 2
    assert len(file_handlers(hoshikage_logger)) == 1
    assert not any(handler in first for handler in hoshikage_logger.handlers)
    logging.getLogger("hoshikage.x").warning("once")
    for handler in hoshikage_logger.handlers:
        handler.flush()
    assert path.read_text(encoding="utf-8").count("once") == 1


def test_console_level_follows_the_setting(
    tmp_path: Path, hoshikage_logger: logging.Logger
) -> None:
    configure_logging("error", tmp_path)
    console = [h for h in hoshikage_logger.handlers if not isinstance(h, logging.FileHandler)]
    assert [h.level for h in console] == [logging.ERROR]
    assert [h.level for h in file_handlers(hoshikage_logger)] == [logging.INFO]
    assert hoshikage_logger.propagate is False


def test_unwritable_log_dir_is_not_fatal(tmp_path: Path, hoshikage_logger: logging.Logger) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    assert configure_logging("info", blocker / "logs") is None
    assert file_handlers(hoshikage_logger) == []
