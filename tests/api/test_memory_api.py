"""Long-term memory through the server: a fact told in one session is recalled in another
(raw HTTP, SSE, the official openai and ollama clients), the /v1/memory routes, opting a turn
out, namespaces (API keys and `user`), the status report, keyword mode, and bad input.

The servers serve stories260K (no chat template) with all-MiniLM-L6-v2 as the embedding model
(semantic memory) unless a test says otherwise. Turns are remembered off the request path, so
a test flushes the indexer before it looks at memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from hoshikage.engine import LoadOptions
from hoshikage.memory.embedder import EngineEmbedder
from hoshikage.memory.setup import memory_bank
from hoshikage.store import Database
from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import STORIES, stream_json

CHAT = "/v1/chat/completions"
MEMORY = "/v1/memory"
MINILM = "all-MiniLM-L6-v2-q8_0.gguf"
CAT_FACT = "My cat is called Tama."
CAT_QUESTION = "What is my cat's name?"
BREAD_QUESTION = "How do I bake sourdough bread?"
MEMORIES_HEADER = "x-hoshikage-memories"


# --- helpers -----------------------------------------------------------------------------------
def chat(
    server: LiveServer,
    text: str,
    session: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    """One greedy, short chat turn (in `session` when given); asserts it succeeded."""
    body: dict[str, Any] = {
        "model": STORIES,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "temperature": 0,
        **fields,
    }
    if session is not None:
        body["session_id"] = session
    response = httpx.post(server.url + CHAT, json=body, headers=headers or {}, timeout=60)
    assert response.status_code == 200, response.text
    return response


def flush(server: LiveServer) -> None:
    """Wait until every stored turn is remembered."""
    indexer = server.state.service.indexer
    assert indexer is not None, "memory indexer not running"
    indexer.notify()
    assert indexer.flush(30), "the memory indexer did not catch up within 30 s"


def context_of(body: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = body["hoshikage"]["context"]
    return context


def memory_ids(body: dict[str, Any]) -> list[int]:
    return [memory["id"] for memory in context_of(body)["memories"]]


def header_ids(headers: httpx.Headers | dict[str, str]) -> list[int]:
    value = headers[MEMORIES_HEADER]
    return [int(part) for part in value.split(",") if part]


def get(server: LiveServer, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers=auth(key), timeout=30)


def delete(server: LiveServer, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return httpx.delete(server.url + path, params=params, headers=auth(key), timeout=30)


def post_fact(
    server: LiveServer, text: str, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    response = httpx.post(
        server.url + MEMORY, json={"text": text, **fields}, headers=auth(key), timeout=30
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def search(server: LiveServer, q: str, key: str | None = None, **params: Any) -> list[Any]:
    response = get(server, MEMORY + "/search", key, q=q, **params)
    assert response.status_code == 200, response.text
    data: list[Any] = response.json()["data"]
    return data


def ids(items: list[Any]) -> list[int]:
    return [item["id"] for item in items]


def texts(items: list[Any]) -> list[str]:
    return [item["text"] for item in items]


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "traceback" not in response.text.lower()
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 5
    return error


# --- servers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(shared_models: Path) -> Path:
    return shared_models / MINILM


@pytest.fixture(scope="module")
def server(module_server_factory: ServerFactory, minilm: Path) -> LiveServer:
    """Semantic memory, no API keys: everything is in the namespace 'local'."""
    return module_server_factory(embedding_model=str(minilm))


@pytest.fixture(scope="module")
def keyword_server(module_server_factory: ServerFactory) -> LiveServer:
    """No embedding model: memory by keywords (FTS5)."""
    return module_server_factory()


@pytest.fixture(scope="module")
def keyed(module_server_factory: ServerFactory, minilm: Path) -> LiveServer:
    """Two API keys, each its own namespace."""
    return module_server_factory(api_keys=["key-a", "key-b"], embedding_model=str(minilm))


@pytest.fixture(scope="module")
def off_server(module_server_factory: ServerFactory) -> LiveServer:
    """Memory switched off (setting memory = false)."""
    return module_server_factory(memory=False)


@dataclass(frozen=True)
class Told:
    """A fact told in a session, as remembered."""

    memory_id: int
    session_id: str


def tell(server: LiveServer, text: str = CAT_FACT, session: str = "pets") -> Told:
    """Tell a fact in a session and wait until it is remembered."""
    response = chat(server, text, session)
    session_id = response.headers["x-session-id"]
    flush(server)
    listed = get(server, MEMORY, session=session_id).json()["data"]
    (memory,) = [m for m in listed if m["text"] == text]
    assert memory["role"] == "user" and memory["namespace"] == "local"
    return Told(memory["id"], session_id)


@pytest.fixture(scope="module")
def cat_fact(server: LiveServer) -> Told:
    """'My cat is called Tama.' told in session 'pets' of the shared server, remembered."""
    return tell(server)


@pytest.fixture
def fresh(server_factory: ServerFactory, minilm: Path) -> LiveServer:
    """A server of the test's own (semantic memory): recall does not depend on test order."""
    return server_factory(embedding_model=str(minilm))


# --- recall across sessions --------------------------------------------------------------------
def test_a_fact_told_in_one_session_is_recalled_in_another(fresh: LiveServer) -> None:
    told = tell(fresh)
    response = chat(fresh, CAT_QUESTION, "recall-raw")
    body = response.json()
    context = context_of(body)
    assert context["memory_mode"] == "semantic"
    (recalled,) = [m for m in context["memories"] if m["id"] == told.memory_id]
    assert recalled["text"] == CAT_FACT
    assert recalled["session_id"] == told.session_id
    assert recalled["score"] >= fresh.settings.memory_min_score
    assert recalled["created_at"] == pytest.approx(time.time(), abs=600)
    assert context["history_messages"] == 0 and context["dropped_messages"] == 0
    assert context["summary"] is None
    assert header_ids(response.headers) == memory_ids(body)
    # The notes went into the prompt: it is longer than the question asked alone.
    alone = chat(fresh, CAT_QUESTION).json()
    assert "hoshikage" not in alone  # no session: no context report, no memories
    assert body["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"] + 5
    # In the session that was told, the fact is history, not a memory to recall.
    same = chat(fresh, CAT_QUESTION, told.session_id).json()
    assert told.memory_id not in memory_ids(same)
    assert context_of(same)["history_messages"] == 2
    # An unrelated question in a third session recalls nothing.
    unrelated = chat(fresh, BREAD_QUESTION, "bread")
    assert context_of(unrelated.json())["memory_mode"] == "semantic"
    assert context_of(unrelated.json())["memories"] == []
    assert unrelated.headers[MEMORIES_HEADER] == ""


def test_recall_in_the_first_chunk_of_a_stream(fresh: LiveServer) -> None:
    told = tell(fresh)
    body = {
        "model": STORIES,
        "messages": [{"role": "user", "content": CAT_QUESTION}],
        "max_tokens": 4,
        "temperature": 0,
        "session_id": "recall-stream",
    }
    response, events = stream_json(fresh, CHAT, body)
    assert response.status_code == 200
    first, *rest = events
    assert told.memory_id in memory_ids(first)
    assert header_ids(response.headers) == memory_ids(first)
    assert rest[-1] == "[DONE]"
    assert all("hoshikage" not in event for event in rest[:-1])


def test_recall_through_the_openai_client(fresh: LiveServer, openai_client: OpenAIFactory) -> None:
    told = tell(fresh)
    api = openai_client(fresh)
    raw = api.chat.completions.with_raw_response.create(
        model=STORIES,
        messages=[{"role": "user", "content": CAT_QUESTION}],
        max_tokens=4,
        temperature=0,
        extra_headers={"X-Session-Id": "recall-openai"},
    )
    completion = raw.parse()
    extra = completion.model_extra or {}
    recalled_ids = ids(extra["hoshikage"]["context"]["memories"])
    assert told.memory_id in recalled_ids
    assert completion.to_dict()["hoshikage"] == extra["hoshikage"]
    assert header_ids(dict(raw.headers)) == recalled_ids
    # The session_id field works as the header does.
    again = api.chat.completions.create(
        model=STORIES,
        messages=[{"role": "user", "content": "Do you know what my cat is called?"}],
        max_tokens=4,
        temperature=0,
        extra_body={"session_id": "recall-openai-body"},
    )
    recalled = (again.model_extra or {})["hoshikage"]["context"]["memories"]
    assert told.memory_id in ids(recalled)


def test_recall_through_the_ollama_client(fresh: LiveServer) -> None:
    told = tell(fresh)
    # The client's typed responses drop fields Ollama does not have (pydantic's default), so
    # the wire is read through an httpx response hook as well.
    bodies: list[dict[str, Any]] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        bodies.append(response.json())

    options = {"temperature": 0, "num_predict": 4}
    question = [{"role": "user", "content": CAT_QUESTION}]
    with ollama.Client(host=fresh.url, timeout=60) as client:
        alone = client.chat(model=STORIES, messages=question, options=options)
    with ollama.Client(
        host=fresh.url,
        timeout=60,
        headers={"X-Session-Id": "recall-ollama"},
        event_hooks={"response": [keep]},
    ) as client:
        answer = client.chat(model=STORIES, messages=question, options=options)
    assert answer.done is True and answer.message.role == "assistant"
    (final,) = bodies
    assert told.memory_id in memory_ids(final), final
    assert final["session_id"]
    # What the client does show: the notes made the prompt longer.
    assert (answer.prompt_eval_count or 0) > (alone.prompt_eval_count or 0) + 5


def test_recall_in_ollamas_last_streamed_line(fresh: LiveServer) -> None:
    told = tell(fresh)
    body = {
        "model": STORIES,
        "messages": [{"role": "user", "content": CAT_QUESTION}],
        "options": {"temperature": 0, "num_predict": 4},
        "session_id": "recall-ollama-stream",
    }
    with httpx.stream("POST", fresh.url + "/api/chat", json=body, timeout=60) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    assert response.status_code == 200
    *pieces, final = lines
    assert final["done"] is True
    assert told.memory_id in memory_ids(final)
    assert all("hoshikage" not in piece for piece in pieces)


def test_asking_the_same_question_often_does_not_crowd_out_the_fact(fresh: LiveServer) -> None:
    told = tell(fresh)
    for n in range(fresh.settings.memory_top_k + 1):
        body = chat(fresh, CAT_QUESTION, f"again-{n}").json()
        flush(fresh)
        assert told.memory_id in memory_ids(body), f"not recalled on asking #{n + 1}"


# --- the /v1/memory routes ---------------------------------------------------------------------
def test_search_finds_the_fact_best_first(server: LiveServer, cat_fact: Told) -> None:
    response = get(server, MEMORY + "/search", q="the name of my cat", limit=3)
    assert response.status_code == 200
    result = response.json()
    assert result["object"] == "list" and result["mode"] == "semantic"
    hits = result["data"]
    assert 1 <= len(hits) <= 3
    assert cat_fact.memory_id in ids(hits)
    for hit in hits:
        assert hit["object"] == "memory" and hit["namespace"] == "local"
        assert isinstance(hit["score"], float) and isinstance(hit["similarity"], float)
        assert 0.0 <= hit["keyword"] <= 1.0
        assert hit["session_id"] and hit["created_at"] > 0
        assert hit["embedding_model"] and "MiniLM" in hit["embedding_model"]
    # A cat memory first, above the stories' answers; the score is about the query.
    assert "cat" in hits[0]["text"].lower(), hits
    assert hits[0]["score"] > 0.5 and hits[0]["keyword"] > 0
    cat_score = next(hit["score"] for hit in hits if hit["id"] == cat_fact.memory_id)
    for_bread = search(server, BREAD_QUESTION, limit=100)
    bread_score = next((h["score"] for h in for_bread if h["id"] == cat_fact.memory_id), None)
    assert bread_score is None or bread_score < cat_score - 0.3


def test_search_results_are_in_the_order_of_their_scores(server: LiveServer) -> None:
    # Two near-identical facts: their similarities differ by far less than the importance
    # nudge (0.05 * (importance - 0.5)). Give the less similar one the higher importance.
    first, second = "Zebras have black and white stripes.", "Zebras have black and white stripes"
    query = "zebra stripes"
    for text in (first, second):
        post_fact(server, text, importance=0.5, user="rank-probe")
    probe = {hit["text"]: hit["score"] for hit in search(server, query, user="rank-probe")}
    high, low = sorted((first, second), key=lambda text: probe[text], reverse=True)
    assert 0 < probe[high] - probe[low] < 0.05, probe
    post_fact(server, high, importance=0.0, user="ranked")
    post_fact(server, low, importance=1.0, user="ranked")
    scores = [hit["score"] for hit in search(server, query, user="ranked")]
    assert scores == sorted(scores, reverse=True)


def test_list_shows_memories_newest_first(server: LiveServer, cat_fact: Told) -> None:
    listed = get(server, MEMORY, limit=1000).json()
    assert listed["object"] == "list"
    data = listed["data"]
    assert cat_fact.memory_id in [item["id"] for item in data]
    times = [item["created_at"] for item in data]
    assert times == sorted(times, reverse=True)
    assert all(item["object"] == "memory" and "score" not in item for item in data)
    paged = get(server, MEMORY, limit=1, offset=1).json()["data"]
    assert [item["id"] for item in paged] == [data[1]["id"]]
    only = get(server, MEMORY, session=cat_fact.session_id).json()["data"]
    assert {item["session_id"] for item in only} == {cat_fact.session_id}
    assert sorted(item["role"] for item in only) == ["assistant", "user"]


def test_list_and_search_take_a_session_name_as_delete_does(
    server: LiveServer, cat_fact: Told
) -> None:
    """?session= is documented as 'id or name' (DELETE resolves names); list and search too."""
    by_id = get(server, MEMORY, session=cat_fact.session_id).json()["data"]
    by_name = get(server, MEMORY, session="pets").json()["data"]
    assert ids(by_name) == ids(by_id)
    found = search(server, "cat", session="pets")
    assert cat_fact.memory_id in ids(found)


def test_add_read_and_forget_a_fact(server: LiveServer) -> None:
    fact = "The spare key is under the blue flowerpot."
    created = post_fact(server, fact, importance=0.8)
    assert created["object"] == "memory" and created["text"] == fact
    assert created["role"] == "fact" and created["importance"] == 0.8
    assert created["session_id"] is None and created["namespace"] == "local"
    assert "MiniLM" in created["embedding_model"]
    memory_id = created["id"]
    found = search(server, "where did I hide the spare key?", limit=3)
    assert found[0]["id"] == memory_id
    assert found[0]["score"] > 0.4

    read = get(server, f"{MEMORY}/{memory_id}")
    assert read.status_code == 200
    assert read.json() == created

    gone = delete(server, f"{MEMORY}/{memory_id}")
    assert gone.status_code == 200
    assert gone.json() == {"object": "memory.deleted", "id": memory_id, "deleted": True}
    error = assert_openai_error(get(server, f"{MEMORY}/{memory_id}"), 404)
    assert error["code"] == "memory_not_found"
    assert memory_id not in ids(search(server, "spare key flowerpot"))
    assert fact not in texts(get(server, MEMORY, limit=1000).json()["data"])
    again = assert_openai_error(delete(server, f"{MEMORY}/{memory_id}"), 404)
    assert again["code"] == "memory_not_found"


def test_a_fact_can_belong_to_a_session(server: LiveServer) -> None:
    session_id = chat(server, "Hello there.", "tied").headers["x-session-id"]
    created = post_fact(server, "Tied facts are forgotten with their session.", session_id="tied")
    assert created["session_id"] == session_id
    missing = httpx.post(
        server.url + MEMORY, json={"text": "x", "session_id": "no-such-session"}, timeout=30
    )
    assert assert_openai_error(missing, 404)["code"] == "session_not_found"


def test_forget_a_conversation_keeps_its_messages(server: LiveServer) -> None:
    response = chat(server, "My dog is called Pochi.", "forgettable")
    session_id = response.headers["x-session-id"]
    post_fact(server, "Pochi likes long walks.", session_id=session_id)
    flush(server)
    before = get(server, MEMORY, session=session_id).json()["data"]
    assert sorted(m["role"] for m in before) == ["assistant", "fact", "user"]
    assert any("Pochi" in hit["text"] for hit in search(server, "Pochi"))

    forgotten = delete(server, MEMORY, session="forgettable")
    assert forgotten.status_code == 200
    assert forgotten.json() == {"object": "list", "deleted": 3, "session_id": session_id}

    flush(server)  # forgotten messages are never remembered again
    assert get(server, MEMORY, session=session_id).json()["data"] == []
    assert not any("Pochi" in text for text in texts(search(server, "Pochi dog", limit=50)))
    messages = get(server, f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "My dog is called Pochi."
    # A later turn in that conversation is remembered again; the old one is not.
    chat(server, "Pochi has a red collar.", "forgettable")
    flush(server)
    remembered = texts(get(server, MEMORY, session=session_id).json()["data"])
    assert "Pochi has a red collar." in remembered
    assert "My dog is called Pochi." not in remembered


def test_forget_everything_of_one_user(server: LiveServer) -> None:
    for text in ("Wipe me one.", "Wipe me two."):
        post_fact(server, text, user="wipe")
    kept = post_fact(server, "Keep me.", user="keep")
    response = delete(server, MEMORY, all="true", user="wipe")
    assert response.status_code == 200
    assert response.json()["deleted"] == 2
    assert get(server, MEMORY, user="wipe").json()["data"] == []
    assert ids(get(server, MEMORY, user="keep").json()["data"]) == [kept["id"]]


def test_deleting_a_session_leaves_no_trace_of_its_memories(server: LiveServer) -> None:
    chat(server, "My hamster is called Mochimochi.", "hamster")
    flush(server)
    assert any("Mochimochi" in text for text in texts(search(server, "Mochimochi hamster")))
    assert httpx.delete(server.url + "/v1/sessions/hamster", timeout=30).status_code == 200
    assert not any("Mochimochi" in t for t in texts(get(server, MEMORY, limit=1000).json()["data"]))
    assert not any("Mochimochi" in t for t in texts(search(server, "Mochimochi hamster")))
    # Nor in the keyword index: deleted text must not linger in the database file.
    rows = server.state.database.query(
        "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?", ('"mochimochi"',)
    )
    assert rows[0][0] == 0


def test_a_deleted_sessions_memories_do_not_crowd_out_live_ones(fresh: LiveServer) -> None:
    fact = post_fact(fresh, CAT_FACT)
    search(fresh, "anything")  # the namespace's vectors are now cached by the index
    chat(fresh, "Hello.", "noisy")
    for n in range(20):
        post_fact(fresh, f"Tell me about my feline companion ({n}).", session_id="noisy")
    flush(fresh)
    assert httpx.delete(fresh.url + "/v1/sessions/noisy", timeout=30).status_code == 200
    assert ids(get(fresh, MEMORY, limit=1000).json()["data"]) == [fact["id"]]
    # No word in common with the fact: only its vector can find it.
    assert fact["id"] in ids(search(fresh, "my feline companion", limit=5))


def test_memories_added_by_another_front_end_are_found_by_meaning(
    fresh: LiveServer, minilm: Path
) -> None:
    post_fact(fresh, "Tea is best without sugar.")
    search(fresh, "anything")  # the namespace's vectors are now cached by the index
    # What `/remember` in a terminal chat on the same data directory does.
    database = Database(fresh.settings.database_path)
    embedder = EngineEmbedder(minilm, LoadOptions(n_threads=1))
    try:
        fact = memory_bank(fresh.settings, database, embedder).add_fact("local", CAT_FACT)
    finally:
        embedder.close()
        database.close()
    assert get(fresh, f"{MEMORY}/{fact.id}").status_code == 200
    # No word in common with the fact: only its vector can find it.
    assert fact.id in ids(search(fresh, "feline", limit=5))


def test_since_and_until_filter(server: LiveServer, cat_fact: Told) -> None:
    now = time.time()
    assert cat_fact.memory_id in ids(search(server, "cat", since=str(now - 3600)))
    assert search(server, "cat", since=str(now + 3600)) == []
    assert search(server, "cat", until="2001-01-01T00:00:00+00:00") == []
    recent = get(server, MEMORY, since="2001-01-01").json()["data"]
    assert cat_fact.memory_id in ids(recent)


# --- opting out --------------------------------------------------------------------------------
def test_memory_false_recalls_nothing_and_is_never_remembered(
    server: LiveServer, cat_fact: Told
) -> None:
    asked = chat(server, CAT_QUESTION, "private-question", memory=False)
    context = context_of(asked.json())
    assert context["memories"] == [] and context["memory_mode"] is None
    assert asked.headers[MEMORIES_HEADER] == ""

    told = chat(server, "My parrot is called Piyopiyo.", "private", memory=False)
    session_id = told.headers["x-session-id"]
    flush(server)
    assert not any("Piyopiyo" in text for text in texts(search(server, "Piyopiyo parrot")))
    assert get(server, MEMORY, session=session_id).json()["data"] == []
    question_session = asked.headers["x-session-id"]
    assert get(server, MEMORY, session=question_session).json()["data"] == []
    # The messages are stored all the same.
    messages = get(server, f"/v1/sessions/{session_id}/messages").json()["data"]
    assert messages[0]["content"] == "My parrot is called Piyopiyo."
    # And a later turn with memory on does not bring the opted-out one back.
    chat(server, "Hello again.", "private")
    flush(server)
    remembered = texts(get(server, MEMORY, session=session_id).json()["data"])
    assert "Hello again." in remembered and "My parrot is called Piyopiyo." not in remembered


def test_memory_false_on_ollama_chat(server: LiveServer, cat_fact: Told) -> None:
    body = {
        "model": STORIES,
        "messages": [{"role": "user", "content": CAT_QUESTION}],
        "options": {"temperature": 0, "num_predict": 4},
        "stream": False,
        "session_id": "ollama-private",
        "memory": False,
    }
    final = httpx.post(server.url + "/api/chat", json=body, timeout=60).json()
    assert context_of(final)["memories"] == []
    flush(server)
    assert get(server, MEMORY, session=final["session_id"]).json()["data"] == []


# --- namespaces --------------------------------------------------------------------------------
def test_a_keys_memories_are_invisible_to_another_key(keyed: LiveServer) -> None:
    created = post_fact(keyed, "Key A's locker code is 4711.", "key-a")
    memory_id = created["id"]
    assert created["namespace"].startswith("key:") and "key-a" not in created["namespace"]
    assert memory_id in ids(search(keyed, "locker code", "key-a"))

    assert memory_id not in ids(search(keyed, "locker code", "key-b"))
    assert memory_id not in ids(get(keyed, MEMORY, "key-b", limit=1000).json()["data"])
    assert assert_openai_error(get(keyed, f"{MEMORY}/{memory_id}", "key-b"), 404)["code"] == (
        "memory_not_found"
    )
    assert assert_openai_error(delete(keyed, f"{MEMORY}/{memory_id}", "key-b"), 404)["code"] == (
        "memory_not_found"
    )
    assert delete(keyed, MEMORY, "key-b", all="true").json()["deleted"] == 0
    # Still there for its owner.
    assert get(keyed, f"{MEMORY}/{memory_id}", "key-a").status_code == 200
    # And without a key at all: 401.
    assert assert_openai_error(get(keyed, MEMORY), 401)["code"] == "invalid_api_key"


def test_user_narrows_a_keys_namespace(keyed: LiveServer) -> None:
    created = post_fact(keyed, "Alice's favourite colour is teal.", "key-a", user="alice")
    memory_id = created["id"]
    assert created["namespace"].endswith("/user:alice")
    assert ids(search(keyed, "favourite colour", "key-a", user="alice")) == [memory_id]
    # Search returns the nearest memories of the namespace searched, however far: the point
    # is that alice's is never among them elsewhere.
    for key, user in (("key-a", None), ("key-a", "bob"), ("key-b", "alice"), ("key-b", None)):
        params = {} if user is None else {"user": user}
        found = search(keyed, "favourite colour", key, **params)
        assert memory_id not in ids(found), (key, user)
        assert all(hit["namespace"] != created["namespace"] for hit in found)
    assert get(keyed, f"{MEMORY}/{memory_id}", "key-a").status_code == 404
    assert get(keyed, f"{MEMORY}/{memory_id}", "key-a", user="alice").status_code == 200


def test_chat_turns_are_recalled_only_within_their_namespace(keyed: LiveServer) -> None:
    chat(keyed, CAT_FACT, "a-pets", headers=auth("key-a"))
    flush(keyed)
    theirs = chat(keyed, CAT_QUESTION, "b-asks", headers=auth("key-b")).json()
    assert context_of(theirs)["memories"] == []
    mine = chat(keyed, CAT_QUESTION, "a-asks", headers=auth("key-a")).json()
    assert CAT_FACT in [m["text"] for m in context_of(mine)["memories"]]
    # The `user` field narrows a chat's memory too.
    chat(keyed, "My rabbit is called Usagi.", "alice-pets", headers=auth("key-a"), user="alice")
    flush(keyed)
    question = "What is my rabbit's name?"
    for user, expected in (("alice", True), ("bob", False), (None, False)):
        fields = {} if user is None else {"user": user}
        body = chat(keyed, question, f"asks-{user}", headers=auth("key-a"), **fields).json()
        recalled = "My rabbit is called Usagi." in [m["text"] for m in context_of(body)["memories"]]
        assert recalled is expected, (user, context_of(body))


def test_a_session_created_with_a_key_remembers_in_that_keys_namespace(
    keyed: LiveServer,
) -> None:
    created = httpx.post(
        keyed.url + "/v1/sessions", json={"name": "made-by-a"}, headers=auth("key-a"), timeout=30
    )
    assert created.status_code == 201
    chat(keyed, "My goldfish is called Kingyo.", "made-by-a", headers=auth("key-a"))
    flush(keyed)
    assert "My goldfish is called Kingyo." in texts(search(keyed, "goldfish", "key-a"))


def test_another_key_cannot_continue_a_keys_session(keyed: LiveServer) -> None:
    chat(keyed, "My secret word is Kumquat.", "a-secret", headers=auth("key-a"))
    flush(keyed)
    response = httpx.post(
        keyed.url + CHAT,
        json={
            "model": STORIES,
            "messages": [{"role": "user", "content": "What is my secret word?"}],
            "max_tokens": 4,
            "session_id": "a-secret",
        },
        headers=auth("key-b"),
        timeout=60,
    )
    # Names are per key: B gets a fresh session of its own under the same name.
    assert response.status_code == 200, response.text
    assert context_of(response.json())["history_messages"] == 0
    assert "Kumquat" not in response.text
    mine = httpx.get(keyed.url + "/v1/sessions/a-secret/messages", headers=auth("key-b"))
    assert mine.status_code == 200
    assert "Kumquat" not in mine.text
    # B deleting "its" a-secret leaves A's alone.
    deleted = httpx.delete(keyed.url + "/v1/sessions/a-secret", headers=auth("key-b"))
    assert deleted.status_code in (200, 204)
    theirs = httpx.get(keyed.url + "/v1/sessions/a-secret/messages", headers=auth("key-a"))
    assert theirs.status_code == 200
    assert "Kumquat" in theirs.text


# --- status ------------------------------------------------------------------------------------
def test_status_reports_semantic_memory(server: LiveServer, cat_fact: Told) -> None:
    flush(server)
    memory = get(server, "/v1/status").json()["long_term_memory"]
    assert memory["mode"] == "semantic"
    assert (
        memory["embedding_model"].startswith("MiniLM") and "/bert/384/" in memory["embedding_model"]
    )
    assert memory["memories"] >= 2
    assert memory["indexed"] >= 2
    assert "needs_reindex" not in memory


def test_status_reports_keyword_memory(keyword_server: LiveServer) -> None:
    memory = get(keyword_server, "/v1/status").json()["long_term_memory"]
    assert memory["mode"] == "keyword" and memory["embedding_model"] is None
    assert "keyword" in memory["note"] and "embedding_model" in memory["note"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", MEMORY + "/search?q=cat"),
        ("GET", MEMORY),
        ("POST", MEMORY),
        ("GET", MEMORY + "/1"),
        ("DELETE", MEMORY + "/1"),
        ("DELETE", MEMORY + "?all=true"),
    ],
)
def test_memory_switched_off(off_server: LiveServer, method: str, path: str) -> None:
    body = {"text": "x"} if method == "POST" else None
    response = httpx.request(method, off_server.url + path, json=body, timeout=30)
    error = assert_openai_error(response, 400)
    assert error["code"] == "memory_disabled"
    assert "memory = false" in error["message"]


def test_memory_off_status_and_chat(off_server: LiveServer) -> None:
    off = off_server
    assert get(off, "/v1/status").json()["long_term_memory"] == {"mode": "off"}
    assert off.state.service.indexer is None
    body = chat(off, CAT_FACT, "off-session").json()
    assert context_of(body)["memories"] == [] and context_of(body)["memory_mode"] is None


# --- keyword mode ------------------------------------------------------------------------------
def test_keyword_mode_recalls_the_cat(keyword_server: LiveServer) -> None:
    told = chat(keyword_server, CAT_FACT, "kw-pets")
    flush(keyword_server)
    asked = chat(keyword_server, CAT_QUESTION, "kw-asks")
    context = context_of(asked.json())
    assert context["memory_mode"] == "keyword"
    recalled = [m for m in context["memories"] if m["text"] == CAT_FACT]
    assert recalled and recalled[0]["session_id"] == told.headers["x-session-id"]
    assert header_ids(asked.headers) == ids(context["memories"])
    hits = search(keyword_server, CAT_QUESTION)
    assert hits[0]["text"] in (CAT_FACT, CAT_QUESTION)
    assert all(hit["similarity"] is None and hit["embedding_model"] is None for hit in hits)
    unrelated = chat(keyword_server, BREAD_QUESTION, "kw-bread").json()
    assert context_of(unrelated)["memories"] == []


# --- bad input ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    body: Any = None
    status: int = 400
    param: str | None = None
    code: str | None = None


BAD = [
    Bad("search without q", "GET", MEMORY + "/search", param="query.q"),
    Bad("search with empty q", "GET", MEMORY + "/search?q=", param="query.q"),
    Bad("search limit 0", "GET", MEMORY + "/search?q=cat&limit=0", param="query.limit"),
    Bad("search limit 1000", "GET", MEMORY + "/search?q=cat&limit=1000", param="query.limit"),
    Bad(
        "search limit not a number", "GET", MEMORY + "/search?q=cat&limit=ten", param="query.limit"
    ),
    Bad("search min_score 2", "GET", MEMORY + "/search?q=cat&min_score=2", param="query.min_score"),
    Bad("since yesterday", "GET", MEMORY + "/search?q=cat&since=yesterday", param="since"),
    Bad("until gibberish", "GET", MEMORY + "?until=soon", param="until"),
    Bad("q too long", "GET", MEMORY + "/search?q=" + "x" * 4001, param="query.q"),
    Bad("list limit 0", "GET", MEMORY + "?limit=0", param="query.limit"),
    Bad("list limit 1001", "GET", MEMORY + "?limit=1001", param="query.limit"),
    Bad("list offset negative", "GET", MEMORY + "?offset=-1", param="query.offset"),
    Bad("list offset beyond SQLite", "GET", MEMORY + f"?offset={10**30}", param="query.offset"),
    Bad("empty session filter", "GET", MEMORY + "?session=", param="query.session"),
    Bad("post empty text", "POST", MEMORY, {"text": ""}, param="text"),
    Bad("post no text", "POST", MEMORY, {}, param="text"),
    Bad("post text not a string", "POST", MEMORY, {"text": 5}, param="text"),
    Bad("post text too long", "POST", MEMORY, {"text": "x" * 20_001}, param="text"),
    Bad("post importance 2", "POST", MEMORY, {"text": "x", "importance": 2}, param="importance"),
    Bad(
        "post importance negative",
        "POST",
        MEMORY,
        {"text": "x", "importance": -0.1},
        param="importance",
    ),
    Bad("post unknown field", "POST", MEMORY, {"text": "x", "colour": "red"}, param="colour"),
    Bad("post a list", "POST", MEMORY, ["x"]),
    Bad("post malformed json", "POST", MEMORY, b'{"text": '),
    Bad(
        "post unknown session",
        "POST",
        MEMORY,
        {"text": "x", "session_id": "nope"},
        status=404,
        code="session_not_found",
    ),
    Bad("get non-integer id", "GET", MEMORY + "/abc", param="path.memory_id"),
    Bad("delete non-integer id", "DELETE", MEMORY + "/1.5", param="path.memory_id"),
    Bad("get missing id", "GET", MEMORY + "/987654", status=404, code="memory_not_found"),
    Bad("get id beyond SQLite", "GET", MEMORY + f"/{10**20}", param="path.memory_id"),
    Bad("delete id beyond SQLite", "DELETE", MEMORY + f"/{10**20}", param="path.memory_id"),
    Bad(
        "search in an unknown session",
        "GET",
        MEMORY + "/search?q=cat&session=nope",
        status=404,
        code="session_not_found",
    ),
    Bad("list an unknown session", "GET", MEMORY + "?session=nope", status=404),
    Bad("delete without what", "DELETE", MEMORY, param="session"),
    Bad("delete all=false", "DELETE", MEMORY + "?all=false", param="session"),
    Bad("delete all=maybe", "DELETE", MEMORY + "?all=maybe", param="query.all"),
    Bad(
        "delete unknown session",
        "DELETE",
        MEMORY + "?session=nope",
        status=404,
        code="session_not_found",
    ),
    Bad("wrong method", "PUT", MEMORY + "/1", {"text": "x"}, status=405),
    Bad("user too long", "GET", MEMORY + "?user=" + "u" * 257, param="query.user"),
]


@pytest.mark.parametrize("bad", BAD, ids=[bad.name for bad in BAD])
def test_bad_input_gets_a_clear_error(server: LiveServer, bad: Bad) -> None:
    options: dict[str, Any] = {"timeout": 30}
    if isinstance(bad.body, bytes):
        options["content"] = bad.body
        options["headers"] = {"content-type": "application/json"}
    elif bad.body is not None:
        options["json"] = bad.body
    with httpx.Client() as client:  # one connection per request: a 500 may reset it
        response = client.request(bad.method, server.url + bad.path, **options)
    error = assert_openai_error(response, bad.status)
    if bad.param is not None:
        assert error["param"] == bad.param, error
    if bad.code is not None:
        assert error["code"] == bad.code, error


def test_the_server_keeps_serving(server: LiveServer) -> None:
    # After the table (file order): the bad requests left memory and chat working.
    assert get(server, "/health").status_code == 200
    assert isinstance(search(server, "cat"), list)
    assert server.state.service.in_flight == 0


# --- the Chroma backend ------------------------------------------------------------------------
def test_recall_and_forget_with_the_chroma_backend(
    server_factory: ServerFactory, minilm: Path
) -> None:
    chroma = server_factory(embedding_model=str(minilm), memory_backend="chroma")
    told = tell(chroma)
    body = chat(chroma, CAT_QUESTION, "chroma-asks").json()
    assert told.memory_id in memory_ids(body)
    assert delete(chroma, f"{MEMORY}/{told.memory_id}").status_code == 200
    assert told.memory_id not in ids(search(chroma, CAT_QUESTION))
    again = chat(chroma, "Do you know what my cat is called?", "chroma-asks-again").json()
    assert told.memory_id not in memory_ids(again)
