"""Session names belong to an API key: another key may use the same name, and never learns
(by a 409, or by finding it) that the first key has one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, ServerFactory
from tests.api.helpers import ONCE, STORIES

KEY_A = "key-a-secret"
KEY_B = "key-b-secret"


@pytest.fixture
def keyed(server_factory: ServerFactory) -> LiveServer:
    """A fresh server (and database) per test, so that names start free."""
    return server_factory(api_keys=[KEY_A, KEY_B])


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(server: LiveServer, key: str, name: str, **body: Any) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/sessions", json={"name": name, **body}, headers=as_key(key), timeout=30
    )


def get(server: LiveServer, key: str, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=as_key(key), timeout=30)


def test_two_keys_may_each_have_a_session_named_work(keyed: LiveServer) -> None:
    first = create(keyed, KEY_A, "work", system_prompt="A's prompt")
    assert first.status_code == 201, first.text
    second = create(keyed, KEY_B, "work", system_prompt="B's prompt")
    assert second.status_code == 201, second.text  # no 409: A's name is not B's business
    mine, theirs = first.json(), second.json()
    assert mine["id"] != theirs["id"]
    assert mine["name"] == theirs["name"] == "work"
    assert mine["namespace"] != theirs["namespace"]

    # Each key finds its own "work", by name, and not the other's.
    assert get(keyed, KEY_A, "/v1/sessions/work").json()["id"] == mine["id"]
    assert get(keyed, KEY_B, "/v1/sessions/work").json()["id"] == theirs["id"]
    assert get(keyed, KEY_B, "/v1/sessions/work").json()["system_prompt"] == "B's prompt"


def test_another_keys_session_stays_invisible(keyed: LiveServer) -> None:
    mine = create(keyed, KEY_A, "work").json()
    theirs = create(keyed, KEY_B, "work").json()
    listed = get(keyed, KEY_B, "/v1/sessions").json()["data"]
    assert [item["id"] for item in listed] == [theirs["id"]]
    for reference in (mine["id"], mine["id"][:8]):
        response = get(keyed, KEY_B, f"/v1/sessions/{reference}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "session_not_found"
        assert get(keyed, KEY_B, f"/v1/sessions/{reference}/messages").status_code == 404
    # B deleting "work" deletes B's, and A's is still there.
    deleted = httpx.delete(keyed.url + "/v1/sessions/work", headers=as_key(KEY_B), timeout=30)
    assert deleted.status_code == 200 and deleted.json()["id"] == theirs["id"]
    assert get(keyed, KEY_A, "/v1/sessions/work").json()["id"] == mine["id"]
    assert get(keyed, KEY_B, "/v1/sessions/work").status_code == 404


def test_within_one_key_a_duplicate_name_is_still_409(keyed: LiveServer) -> None:
    assert create(keyed, KEY_A, "work").status_code == 201
    again = create(keyed, KEY_A, "work")
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "session_exists" and "'work' already exists" in error["message"]
    assert len(get(keyed, KEY_A, "/v1/sessions").json()["data"]) == 1
    # The refusal told A about A's own session only; B may still create the name.
    assert create(keyed, KEY_B, "work").status_code == 201


def test_a_chat_naming_a_session_another_key_has_gets_its_own(keyed: LiveServer) -> None:
    """A chat with session_id="work" finds or creates the caller's own "work"."""
    mine = create(keyed, KEY_A, "work").json()

    def chat(key: str) -> httpx.Response:
        return httpx.post(
            keyed.url + "/v1/chat/completions",
            json={"model": STORIES, "messages": ONCE, "max_tokens": 2, "session_id": "work"},
            headers=as_key(key),
            timeout=60,
        )

    answered = chat(KEY_B)
    assert answered.status_code == 200, answered.text
    theirs = answered.headers["x-session-id"]
    assert theirs != mine["id"]
    assert get(keyed, KEY_B, "/v1/sessions/work").json()["id"] == theirs
    stored = get(keyed, KEY_B, "/v1/sessions/work/messages").json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    # A's session got none of B's turn.
    assert get(keyed, KEY_A, "/v1/sessions/work").json()["message_count"] == 0
    assert chat(KEY_A).headers["x-session-id"] == mine["id"]
