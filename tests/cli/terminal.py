"""Drive the real `hoshikage` program as a person would: under a pseudo-terminal, or piped.

Under a pty prompt_toolkit and Rich behave exactly as on a real terminal, so the output is full
of escape sequences. `Chat` keeps the whole output, strips the escapes and matches regexes on
the plain text. Two escapes are kept as markers instead: prompt_toolkit turns bracketed paste
on (ESC[?2004h) each time it starts prompting and off (ESC[?2004l) when the input is accepted
(or ^C/^D ends the prompt). They tell a real prompt from a line that merely contains "You> ",
such as the history preview printed by /load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pexpect

TIMEOUT = 30.0
COLUMNS, LINES = 200, 40
PROMPT = "You> "
ANSWER = "Assistant> "
READY = "\x00"  # a prompt has started (stands for ESC[?2004h)
ACCEPTED = "\x01"  # the prompt has ended: input accepted, ^C or ^D (ESC[?2004l)

# CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL|ST), charset selection and the
# two-character escapes. '[' and ']' are left out of the last class on purpose, so that an
# incomplete CSI at the end of the output does not match as a two-character escape.
_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+][0-~]|[@-Z\\^_=>78c])"
)


def terminal_text(raw: str) -> str:
    """The output as plain text, with READY and ACCEPTED marking where prompts begin and end."""
    tail = raw.rfind("\x1b")
    if tail >= 0 and not _ESCAPE.match(raw, tail):
        raw = raw[:tail]  # an escape sequence still arriving
    raw = raw.replace("\x1b[?2004h", READY).replace("\x1b[?2004l", ACCEPTED)
    return _ESCAPE.sub("", raw).replace("\r", "")


def plain(text: str) -> str:
    return text.replace(READY, "").replace(ACCEPTED, "")


def one_line(text: str) -> str:
    """Non-empty lines joined by spaces: messages that Rich may have wrapped, compared whole."""
    return " ".join(line.strip() for line in plain(text).splitlines() if line.strip())


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (isolated_env's HOSHIKAGE_* included) set up for a terminal."""
    env = dict(os.environ)
    env.update(
        TERM="xterm-256color",
        NO_COLOR="1",
        PROMPT_TOOLKIT_NO_CPR="1",
        COLUMNS=str(COLUMNS),
        LINES=str(LINES),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Chat:
    """`python -m hoshikage chat ...` running under a pseudo-terminal."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "hoshikage", "chat", *args],
            env=dict(env or child_env()),
            dimensions=(LINES, COLUMNS),
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT,
        )
        self.raw = ""
        self.position = 0  # in terminal_text(self.raw): where the next expect() starts looking
        self.exit_status: int | None = None

    # --- reading -------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """Everything shown so far, as plain text."""
        return plain(terminal_text(self.raw))

    def _read(self, deadline: float) -> bool:
        """Read what is available (waiting at most until deadline); False at end of output."""
        try:
            self.raw += self.child.read_nonblocking(
                65536, timeout=max(0.01, min(0.2, deadline - time.monotonic()))
            )
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            return False
        return True

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for pattern in the plain output after the previous match; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = terminal_text(self.raw)
            match = regex.search(text, self.position)
            if match is not None:
                self.position = match.end()
                return match
            alive = self._read(deadline)
            if not alive and regex.search(terminal_text(self.raw), self.position) is None:
                raise AssertionError(
                    f"the chat ended while waiting for {pattern!r}; it printed since the last "
                    f"match:\n{plain(text[self.position :])}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {pattern!r}; output since the "
                    f"last match:\n{plain(text[self.position :])}"
                )

    def wait_prompt(self, timeout: float = TIMEOUT) -> str:
        """Wait for the next 'You> ' prompt; return what was printed before it."""
        start = self.position
        match = self.expect(re.escape(READY) + re.escape(PROMPT.rstrip()), timeout)
        return plain(terminal_text(self.raw)[start : match.start()])

    # --- typing --------------------------------------------------------------------------
    def send(self, keys: str) -> None:
        self.child.send(keys)

    def submit(self, line: str) -> None:
        """Type a line and Enter; return once the prompt has accepted it."""
        self.send(line + "\r")
        self.expect(re.escape(ACCEPTED))

    def command(self, line: str, timeout: float = TIMEOUT) -> str:
        """Run a slash command at the prompt; return its output (up to the next prompt)."""
        self.submit(line)
        return self.wait_prompt(timeout)

    def ask(self, message: str, timeout: float = TIMEOUT) -> str:
        """Send a message; return the answer streamed after 'Assistant> '."""
        self.submit(message)
        output = self.wait_prompt(timeout)
        assert ANSWER in output, f"no answer to {message!r}:\n{output}"
        return output.split(ANSWER, 1)[1].strip()

    # --- ending --------------------------------------------------------------------------
    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        """Read the output to its end; return the exit code (-signal if killed by a signal)."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            if time.monotonic() > deadline:
                raise AssertionError(f"the chat did not exit within {timeout}s:\n{self.text}")
        self.child.close()
        status = self.child.exitstatus
        self.exit_status = -self.child.signalstatus if status is None else status
        return self.exit_status

    def quit(self, keys: str = "/exit\r") -> int:
        """Leave the chat with a command or key and return the exit code."""
        self.send(keys)
        return self.wait_exit()

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.text, self.text


def run_hoshikage(
    args: Sequence[str],
    *,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`python -m hoshikage ARGS` with pipes (no terminal); stdin empty unless given."""
    return subprocess.run(
        [sys.executable, "-m", "hoshikage", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=dict(env or child_env()),
        timeout=timeout,
        check=False,
    )


def chat_args(model: Path, *extra: str, max_tokens: int | None = 20) -> list[str]:
    """Arguments for a small, greedy, fast chat on the given model.

    One thread: a tiny model gains nothing from more, and llama.cpp threads that spin-wait
    for each other slow down badly when other processes compete for the cores.
    """
    args = ["-m", str(model), "--n-ctx", "512", "--temperature", "0", "--threads", "1"]
    if max_tokens is not None:
        args += ["--max-tokens", str(max_tokens)]
    return [*args, *extra]
