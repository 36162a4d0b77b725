"""Logging: a console handler at the chosen level and a log file in the user log dir."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

LOG_FILE_NAME = "hoshikage.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, log_dir: Path | None) -> Path | None:
    """Set up the 'hoshikage' logger tree; return the log file path if one is written.

    The file always records info and above (or more, if the console asks for more), so a
    problem can be looked at after the fact without rerunning with --log-level.
    """
    console_level = LEVELS[level]
    root = logging.getLogger("hoshikage")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = False
    console = logging.StreamHandler()
    console.setLevel(console_level)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    file_level = min(console_level, logging.INFO)
    root.setLevel(file_level)
    if log_dir is None:
        return None
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / LOG_FILE_NAME
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError as exc:
        root.warning("cannot write the log file in %s: %s", log_dir, exc)
        return None
    file_handler.setLevel(file_level)
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(file_handler)
    return path
