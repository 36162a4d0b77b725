"""`hoshikage serve` as a real process: it says where it listens, warns when exposed without a
key, refuses a taken port clearly, and shuts down gracefully on SIGINT and SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import ONCE, STORIES

# The command on its own, so that these tests do not depend on how cli/app.py registers it.
SERVE = [
    sys.executable,
    "-c",
    "import typer; from hoshikage.cli.serve_cmd import serve; typer.run(serve)",
]
LISTENING = re.compile(r"listening on http://[^ ]+:(\d+) ")


class ServeProcess:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--port", "0", "--n-ctx", "512", "--threads", "1", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            self.lines.append(line)
            found = LISTENING.search(line)
            if found:
                return int(found.group(1))
            if time.monotonic() > deadline:
                break
        raise AssertionError("serve did not say where it listens:\n" + "".join(self.lines))

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30) -> tuple[int, str]:
        self.process.send_signal(signum)
        rest, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, "".join(self.lines) + rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def spawn(isolated_env: Path) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def test_serves_warns_when_exposed_and_stops_on_sigint(spawn: Any, stories_model: Path) -> None:
    server = spawn("--host", "0.0.0.0", "--model", str(stories_model))
    output = "".join(server.lines)
    assert "without an API key" in output
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    answer = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": STORIES, "messages": ONCE, "max_tokens": 4},
        timeout=30,
    )
    assert answer.status_code == 200
    assert httpx.get(server.url + "/docs", timeout=10).status_code == 200
    code, output = server.stop(signal.SIGINT)
    assert code == 0, output
    assert "Hoshikage stopped." in output and "Traceback" not in output


def test_a_taken_port_is_a_clear_error(spawn: Any, stories_model: Path) -> None:
    first = spawn("--model", str(stories_model))
    second = subprocess.run(
        [*SERVE, "--port", str(first.port), "--model", str(stories_model)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    output = second.stdout + second.stderr
    assert "address already in use" in output.lower()
    assert f"could not serve on 127.0.0.1:{first.port}" in output
    assert "Traceback" not in output


def test_sigterm_ends_running_streams_with_a_final_event(spawn: Any, random_model: Path) -> None:
    server = spawn("--model", str(random_model), "--api-key", "k", "--shutdown-grace", "0.5")
    assert "without an API key" not in "".join(server.lines)
    events: list[str] = []
    first_token = threading.Event()

    def stream() -> None:
        body = {
            "model": "random",
            "messages": ONCE,
            "max_tokens": 400,  # seconds of decoding: still running at shutdown
            "ignore_eos": True,
            "stream": True,
        }
        headers = {"Authorization": "Bearer k"}
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    if len(events) >= 3:
                        first_token.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_token.wait(timeout=30)
    started = time.monotonic()
    code, output = server.stop(signal.SIGTERM)
    reader.join(timeout=10)
    assert code == 0, output
    assert time.monotonic() - started < 10
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "length"  # cut short, and says so
    assert len(events) < 400  # it was ended early, not run to the end
    assert "Traceback" not in output
    assert "never retrieved" not in output
