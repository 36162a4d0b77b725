"""API keys: off by default; when set, every route but /health needs `Authorization: Bearer`."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import LiveServer, OpenAIFactory, ServerFactory
from tests.api.helpers import ONCE, STORIES


@pytest.fixture(scope="module")
def keyed(module_server_factory: ServerFactory) -> LiveServer:
    return module_server_factory(api_keys=["s3cret", "other-key"])


def test_no_keys_means_no_auth(
    module_server_factory: ServerFactory, openai_client: OpenAIFactory
) -> None:
    open_server = module_server_factory()
    assert httpx.get(open_server.url + "/v1/models", timeout=10).status_code == 200
    assert [m.id for m in openai_client(open_server).models.list()] == [STORIES]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret"},
        {"Authorization": "Basic s3cret"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong key", "no scheme", "basic", "empty"],
)
@pytest.mark.parametrize("path", ["/v1/models", "/v1/status", "/metrics", "/v1/sessions"])
def test_missing_or_wrong_key_is_401_in_openai_shape(
    keyed: LiveServer, path: str, headers: dict[str, str]
) -> None:
    response = httpx.get(keyed.url + path, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]


def test_right_key_is_served(keyed: LiveServer, openai_client: OpenAIFactory) -> None:
    for key in ("s3cret", "other-key"):
        answer = openai_client(keyed, api_key=key).chat.completions.create(
            model=STORIES, messages=ONCE, max_tokens=2
        )
        assert answer.choices[0].message.content is not None
    response = httpx.get(
        keyed.url + "/metrics", headers={"Authorization": "Bearer s3cret"}, timeout=10
    )
    assert response.status_code == 200


def test_wrong_key_raises_the_packages_authentication_error(
    keyed: LiveServer, openai_client: OpenAIFactory
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(keyed, api_key="wrong").models.list()
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai_client(keyed, api_key="wrong").chat.completions.create(model=STORIES, messages=ONCE)


def test_health_needs_no_key(keyed: LiveServer) -> None:
    response = httpx.get(keyed.url + "/health", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_key_file(
    server_factory: ServerFactory, tmp_path: Path, openai_client: OpenAIFactory
) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("first-key\n\n  second-key  \n", encoding="utf-8")
    server = server_factory(api_key_file=key_file)
    assert [m.id for m in openai_client(server, api_key="second-key").models.list()] == [STORIES]
    assert [m.id for m in openai_client(server, api_key="first-key").models.list()] == [STORIES]
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, api_key="third-key").models.list()


def test_unreadable_key_file_is_refused_at_start(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="api_key_file"):
        server_factory(api_key_file=tmp_path / "missing.txt")


def test_cors_preflight_and_exposed_headers(server_factory: ServerFactory) -> None:
    origin = "http://app.example"
    server = server_factory(api_keys=["k"], cors_origins=[origin])
    preflight = httpx.options(
        server.url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    answer = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": STORIES, "messages": ONCE, "max_tokens": 2},
        headers={"Origin": origin, "Authorization": "Bearer k"},
        timeout=30,
    )
    assert answer.status_code == 200
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-hoshikage-dropped-messages" in exposed
    other = httpx.options(
        server.url + "/v1/models",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in other.headers
