"""Bad input to every Ollama route: a 4xx with {"error": "..."}, never a 500, and the server
keeps serving."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.api.conftest import LiveServer

M = "stories260K"
STORY = [{"role": "user", "content": "Once upon a time"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": M, "messages": STORY, "stream": False, **fields}


def generate(**fields: Any) -> dict[str, Any]:
    return {"model": M, "prompt": "Once upon a time", "stream": False, **fields}


def options(**values: Any) -> dict[str, Any]:
    return chat(options=values)


# (method, path, body: a dict to send as JSON or raw text, expected status)
CASES: list[tuple[str, str, Any, int]] = [
    # chat
    ("POST", "/api/chat", '{"model": ', 400),
    ("POST", "/api/chat", "[1, 2]", 400),
    ("POST", "/api/chat", "", 400),
    ("POST", "/api/chat", chat(model=""), 400),
    ("POST", "/api/chat", chat(model="   "), 400),
    ("POST", "/api/chat", chat(model=5), 400),
    ("POST", "/api/chat", {"messages": STORY}, 400),
    ("POST", "/api/chat", chat(messages="hi"), 400),
    ("POST", "/api/chat", chat(messages=[{"role": "robot", "content": "hi"}]), 400),
    ("POST", "/api/chat", chat(messages=[{"content": "hi"}]), 400),
    ("POST", "/api/chat", chat(messages=[{"role": "user", "content": 5}]), 400),
    ("POST", "/api/chat", chat(messages=[{"role": "user", "content": "x", "images": ["AA"]}]), 400),
    ("POST", "/api/chat", chat(stream="yes"), 400),
    ("POST", "/api/chat", chat(options="hot"), 400),
    ("POST", "/api/chat", options(temperature=9), 400),
    ("POST", "/api/chat", options(temperature=-0.5), 400),
    ("POST", "/api/chat", options(temperature="hot"), 400),
    ("POST", "/api/chat", options(num_predict=-3), 400),
    ("POST", "/api/chat", options(num_predict=2.5), 400),
    ("POST", "/api/chat", options(top_p=1.5), 400),
    ("POST", "/api/chat", options(top_k=-1), 400),
    ("POST", "/api/chat", options(min_p=2), 400),
    ("POST", "/api/chat", options(repeat_penalty=0), 400),
    ("POST", "/api/chat", options(repeat_last_n=-2), 400),
    ("POST", "/api/chat", options(presence_penalty=3), 400),
    ("POST", "/api/chat", options(seed="lucky"), 400),
    ("POST", "/api/chat", options(stop=[""]), 400),
    ("POST", "/api/chat", options(stop="end"), 400),
    ("POST", "/api/chat", options(num_ctx=0), 400),
    (
        "POST",
        "/api/chat",
        '{"model": "stories260K", "messages": [], "options": {"temperature": NaN}}',
        400,
    ),
    ("POST", "/api/chat", chat(keep_alive="soon"), 400),
    ("POST", "/api/chat", chat(keep_alive=True), 400),
    ("POST", "/api/chat", chat(keep_alive=[1]), 400),
    ("POST", "/api/chat", chat(format="xml"), 400),
    ("POST", "/api/chat", chat(format=5), 400),
    ("POST", "/api/chat", chat(format={"type": "no-such-type"}), 400),
    ("POST", "/api/chat", chat(tools=[{"type": "function"}]), 400),
    ("POST", "/api/chat", chat(think=True), 400),
    ("POST", "/api/chat", chat(model="no-such-model"), 404),
    ("POST", "/api/chat", chat(model="../../etc/passwd"), 404),
    ("GET", "/api/chat", None, 405),
    # generate
    ("POST", "/api/generate", "{oops}", 400),
    ("POST", "/api/generate", generate(model=""), 400),
    ("POST", "/api/generate", generate(prompt=5), 400),
    ("POST", "/api/generate", generate(raw="yes"), 400),
    ("POST", "/api/generate", generate(system=["a"]), 400),
    ("POST", "/api/generate", generate(suffix="The end."), 400),
    ("POST", "/api/generate", generate(template="{{ .Prompt }}"), 400),
    ("POST", "/api/generate", generate(images=["AA=="]), 400),
    ("POST", "/api/generate", generate(context=["a"]), 400),
    ("POST", "/api/generate", generate(options={"num_predict": -5}), 400),
    ("POST", "/api/generate", generate(options={"temperature": 100}), 400),
    ("POST", "/api/generate", generate(model="no-such-model"), 404),
    # embed and embeddings
    ("POST", "/api/embed", {"model": M}, 400),
    ("POST", "/api/embed", {"model": M, "input": 5}, 400),
    ("POST", "/api/embed", {"model": M, "input": [1, 2]}, 400),
    ("POST", "/api/embed", {"model": M, "input": "x", "truncate": "no"}, 400),
    ("POST", "/api/embed", {"model": M, "input": "x", "dimensions": 0}, 400),
    ("POST", "/api/embed", {"model": M, "input": "x"}, 400),  # a text generation model
    ("POST", "/api/embed", {"model": "", "input": "x"}, 400),
    ("POST", "/api/embed", {"model": "no-such-model", "input": "x"}, 404),
    ("POST", "/api/embeddings", {"model": M, "prompt": 5}, 400),
    ("POST", "/api/embeddings", {"prompt": "x"}, 400),
    ("POST", "/api/embeddings", {"model": "no-such-model", "prompt": "x"}, 404),
    # show
    ("POST", "/api/show", {}, 400),
    ("POST", "/api/show", {"model": 5}, 400),
    ("POST", "/api/show", "not json", 400),
    ("POST", "/api/show", {"model": "no-such-model"}, 404),
    # pull
    ("POST", "/api/pull", {}, 400),
    ("POST", "/api/pull", {"model": "not a reference!"}, 400),
    ("POST", "/api/pull", {"model": "hf://owner/repo/model.bin"}, 400),
    ("POST", "/api/pull", {"model": "owner/repo", "stream": "x"}, 400),
    # delete and copy
    ("DELETE", "/api/delete", {}, 400),
    ("DELETE", "/api/delete", {"model": ""}, 400),
    ("DELETE", "/api/delete", {"model": "no-such-model"}, 404),
    ("POST", "/api/copy", {"source": M}, 400),
    ("POST", "/api/copy", {"source": "", "destination": "x"}, 400),
    ("POST", "/api/copy", {"source": M, "destination": "Bad Name!"}, 400),
    ("POST", "/api/copy", {"source": "no-such-model", "destination": "x"}, 404),
    # not Ollama routes Hoshikage has
    ("POST", "/api/create", {"model": "x"}, 501),
    ("POST", "/api/push", {"model": "x"}, 501),
    ("GET", "/api/no-such-route", None, 404),
]


def test_bad_input_to_every_route(live_server: LiveServer) -> None:
    failures = []
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        for method, path, body, expected in CASES:
            content = body if isinstance(body, str) or body is None else json.dumps(body)
            response = client.request(method, path, content=content)
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            if response.status_code != expected or not isinstance(error, str) or not error:
                failures.append(f"{method} {path} {body!r}: {response.status_code} {response.text}")
        assert not failures, "\n".join(failures)
        # Still serving, and the model still answers.
        response = client.post("/api/chat", json={**chat(), "options": {"num_predict": 8}})
        assert response.status_code == 200
        assert response.json()["done"] is True
