"""/api/pull (NDJSON progress) against a local server that speaks the Hugging Face hub's API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.api.conftest import LiveServer
from tests.models.fake_hub import FakeHub

REPO = "tiny-owner/TinyStories-260K-GGUF"
FILE = "TinyStories-260K-Q8_0.gguf"
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, stories_model: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_file(REPO, FILE, stories_model.read_bytes())
        fake.add_file(REPO, "README.md", b"# Tiny stories\n", lfs=False)
        # Read by the server's pull at request time, so setting it now is early enough.
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield fake


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=live_server.url, timeout=60) as client:
        yield client


def test_pull_streams_progress_then_the_model_runs(
    hub: FakeHub, live_server: LiveServer, client: ollama.Client
) -> None:
    name = f"{REPO}:Q8_0"
    steps = list(client.pull(name, stream=True))
    statuses = [step.status for step in steps]
    assert statuses[0] == "pulling manifest"
    assert "verifying sha256 digest" in statuses
    assert statuses[-1] == "success"
    downloading = [step for step in steps if step.completed is not None]
    assert downloading
    assert downloading[-1].completed == downloading[-1].total
    assert (downloading[-1].digest or "").startswith("sha256:")
    # Registered under the name it was pulled by, as Ollama does.
    assert f"{name.lower()}" in {m.model for m in client.list().models}
    answer = client.generate(model=name, prompt="Once upon a time", options=GREEDY)
    assert "Lily" in (answer.response or "")
    shown = client.show(name)
    assert shown.capabilities == ["completion", "tools"]


def test_pull_without_streaming(hub: FakeHub, live_server: LiveServer) -> None:
    body = {"model": f"hf://{REPO}/{FILE}", "stream": False}
    response = httpx.post(live_server.url + "/api/pull", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    pulled = response.json()["model"]
    assert live_server.state.registry.find(pulled) is not None


def test_pull_errors(hub: FakeHub, live_server: LiveServer, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("not a reference!")
    assert caught.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("nobody/nothing-GGUF")  # stream: false
    assert caught.value.status_code == 404
    # Streaming: the error is the stream's last line, as Ollama sends it.
    with pytest.raises(ollama.ResponseError) as caught:
        list(client.pull("nobody/nothing-GGUF", stream=True))
    assert "nobody/nothing-GGUF" in caught.value.error


def test_pull_refuses_a_file_whose_checksum_lies(hub: FakeHub, live_server: LiveServer) -> None:
    hub.add_file(REPO, "liar-Q4_0.gguf", b"GGUF" + bytes(100), advertised_sha256="0" * 64)
    body = {"model": f"hf://{REPO}/liar-Q4_0.gguf"}
    with httpx.stream("POST", live_server.url + "/api/pull", json=body, timeout=60) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert "error" in lines[-1]
    assert all(line.get("status") != "success" for line in lines)
    assert live_server.state.registry.find("liar:q4_0") is None
