"""Pulling from a local server that speaks the Hugging Face hub's file API (HF_ENDPOINT)."""

from __future__ import annotations

import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.models.hub import (
    DOWNLOADING,
    PULLING_MANIFEST,
    SUCCESS,
    VERIFYING,
    HubReference,
    PullProgress,
    default_alias,
    parse_reference,
    pull,
)
from hoshikage.models.registry import ModelRegistry, RegistryError
from hoshikage.store import Database
from tests.models.fake_hub import FakeHub

REPO = "tiny-owner/TinyStories-260K-GGUF"
F32_FILE = "TinyStories-260K-F32.gguf"
STORIES_SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"


@pytest.fixture(scope="session")
def stories_bytes(stories_model: Path) -> bytes:
    return stories_model.read_bytes()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, stories_bytes: bytes) -> Iterator[FakeHub]:
    """A fake hub serving the story model (under made-up names) at HF_ENDPOINT."""
    with FakeHub() as fake:
        fake.add_file(REPO, F32_FILE, stories_bytes)
        fake.add_file(REPO, "TinyStories-260K-Q8_0.gguf", stories_bytes)
        fake.add_file(REPO, "README.md", b"# Tiny stories\n", lfs=False)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield fake


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    database = Database(tmp_path / "store.db")
    yield ModelRegistry(database)
    database.close()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def downloaded_files(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.rglob("*") if p.is_file())


# --- references and names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf://a/b/c.gguf", HubReference("a/b", filename="c.gguf")),
        ("hf://a/b/dir/c.GGUF@v1.0", HubReference("a/b", filename="dir/c.GGUF", revision="v1.0")),
        ("hf://a/b@main/c.gguf", HubReference("a/b", filename="c.gguf", revision="main")),
        ("a/b:Q4_K_M", HubReference("a/b", quant="Q4_K_M")),
        ("hf.co/a/b-GGUF:q8_0", HubReference("a/b-GGUF", quant="q8_0")),
        ("https://huggingface.co/a/b", HubReference("a/b")),
        ("a/b:Q8_0@abc123", HubReference("a/b", quant="Q8_0", revision="abc123")),
    ],
)
def test_parse_reference(ref: str, expected: HubReference) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("hf://a/b", "names no file"),
        ("hf://a/b/model.safetensors", "does not name a .gguf file"),
        ("hf://a/b/../c.gguf", "cannot read"),
        ("llama3", "cannot read the model reference"),
        ("a/b/c:q4", "cannot read the model reference"),
        ("a/b:q4 k", "cannot read the model reference"),
    ],
)
def test_bad_references_are_refused(ref: str, reason: str) -> None:
    with pytest.raises(RegistryError, match=reason):
        parse_reference(ref)


def test_reference_round_trips_as_text() -> None:
    for text in ("hf://a/b/c.gguf@v1", "a/b:Q4_K_M", "a/b"):
        assert str(parse_reference(text)) == text


@pytest.mark.parametrize(
    ("filename", "alias"),
    [
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "qwen2.5-0.5b-instruct:q4_k_m"),
        ("Meta-Llama-3-8B-Instruct.Q8_0.gguf", "meta-llama-3-8b-instruct:q8_0"),
        ("phi-3-mini-IQ4_XS.gguf", "phi-3-mini:iq4_xs"),
        ("model-f16.gguf", "model:f16"),
        ("stories260K.gguf", "stories260k"),
        ("sub/dir/My Model (v2).gguf", "my-model-v2"),
    ],
)
def test_default_alias(filename: str, alias: str) -> None:
    assert default_alias(filename) == alias


# --- pulling ----------------------------------------------------------------------------------


def test_pull_by_file(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    record = pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert record.name == "tinystories-260k:f32"
    assert record.path == models_dir / "tiny-owner--TinyStories-260K-GGUF" / F32_FILE
    assert record.path.read_bytes() == stories_bytes
    assert record.sha256 == STORIES_SHA256
    assert record.source == f"hf://{REPO}/{F32_FILE}"
    assert record.architecture == "llama" and record.context_length == 2048
    assert registry.get("tinystories-260k:f32") == record
    assert downloaded_files(models_dir) == [F32_FILE]  # no partial file left
    assert [r.range for r in hub.downloads()] == [None]


def test_pull_by_quant_picks_the_file(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    record = pull(f"{REPO}:q8_0", registry, models_dir, name="Tiny:latest")
    assert record.name == "tiny"
    assert record.path.name == "TinyStories-260K-Q8_0.gguf"
    assert record.source == f"hf://{REPO}/TinyStories-260K-Q8_0.gguf"
    assert registry.verify("tiny")


def test_pull_reports_progress_in_ollama_shape(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    events: list[PullProgress] = []
    pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir, progress=events.append)
    statuses = [event.status for event in events]
    assert statuses[0] == PULLING_MANIFEST
    assert statuses[-2:] == [VERIFYING, SUCCESS]
    downloading = [event for event in events if event.status == DOWNLOADING]
    assert downloading[0].completed == 0
    assert downloading[-1].completed == len(stories_bytes)
    completed = [event.completed or 0 for event in downloading]
    assert completed == sorted(completed)
    assert {event.total for event in downloading} == {len(stories_bytes)}
    assert downloading[-1].to_ollama() == {
        "status": f"pulling {STORIES_SHA256[:12]}",
        "digest": f"sha256:{STORIES_SHA256}",
        "total": len(stories_bytes),
        "completed": len(stories_bytes),
    }
    assert events[0].to_ollama() == {"status": "pulling manifest"}
    assert events[-1].to_ollama() == {"status": "success"}


def test_a_dropped_connection_is_resumed_within_the_pull(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.drop_next_download(after_bytes=400_000)
    record = pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert record.sha256 == STORIES_SHA256
    first, second = hub.downloads()
    assert (first.range, first.body_bytes) == (None, 400_000)
    assert (second.range, second.status) == ("bytes=400000-", 206)
    assert second.body_bytes == len(stories_bytes) - 400_000


def test_an_interrupted_pull_continues_on_the_next_one(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.drop_next_download(after_bytes=500_000, then_outage=True)
    with pytest.raises(RegistryError, match="run the same pull again"):
        pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert registry.list() == []
    partial = models_dir / "tiny-owner--TinyStories-260K-GGUF" / f"{F32_FILE}.partial"
    assert partial.stat().st_size == 500_000

    hub.outage = False
    requests_before = len(hub.downloads())
    events: list[PullProgress] = []
    record = pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir, progress=events.append)
    assert record.path.read_bytes() == stories_bytes
    resumed = hub.downloads()[requests_before:]
    assert [(r.range, r.status) for r in resumed] == [("bytes=500000-", 206)]
    assert resumed[0].body_bytes == len(stories_bytes) - 500_000  # only the remainder
    assert next(e for e in events if e.status == DOWNLOADING).completed == 500_000
    assert not partial.exists()


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.ignore_ranges = True
    hub.drop_next_download(after_bytes=300_000)
    assert pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir).sha256 == STORIES_SHA256
    assert [(r.range, r.status) for r in hub.downloads()] == [(None, 200), ("bytes=300000-", 200)]


def test_a_partial_file_longer_than_the_file_is_discarded(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    partial = models_dir / "tiny-owner--TinyStories-260K-GGUF" / f"{F32_FILE}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * (len(stories_bytes) + 10))
    assert pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir).sha256 == STORIES_SHA256
    assert [r.range for r in hub.downloads()] == [None]


def test_two_pulls_of_one_file_do_not_interleave(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    partial = models_dir / "tiny-owner--TinyStories-260K-GGUF" / f"{F32_FILE}.partial"
    partial.parent.mkdir(parents=True)
    with partial.open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a running pull holds it
        with pytest.raises(RegistryError, match="another pull is already downloading"):
            pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert hub.downloads() == []


def test_a_bad_name_is_refused_before_asking_the_hub(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir, name="no spaces")
    assert hub.requests == []


def test_checksum_mismatch_leaves_nothing(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.add_file(REPO, "Lying-Q4_0.gguf", stories_bytes, advertised_sha256="0" * 64)
    with pytest.raises(RegistryError, match=r"checksum mismatch for Lying-Q4_0\.gguf"):
        pull(f"hf://{REPO}/Lying-Q4_0.gguf", registry, models_dir)
    assert downloaded_files(models_dir) == []
    assert registry.list() == []


def test_file_kept_in_git_is_verified_by_its_blob_sha1(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.add_file(REPO, "small-F32.gguf", stories_bytes, lfs=False)
    assert pull(f"hf://{REPO}/small-F32.gguf", registry, models_dir).sha256 == STORIES_SHA256


def test_a_download_that_is_not_gguf_is_refused_and_deleted(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    hub.add_file(REPO, "fake-Q4_0.gguf", b"<html>rate limited</html>" * 100)
    with pytest.raises(RegistryError, match="not a GGUF"):
        pull(f"hf://{REPO}/fake-Q4_0.gguf", registry, models_dir)
    assert downloaded_files(models_dir) == []
    assert registry.list() == []


def test_pulling_again_does_not_download_again(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    first = pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    events: list[PullProgress] = []
    second = pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir, progress=events.append)
    assert len(hub.downloads()) == 1
    assert second.path == first.path and second.sha256 == first.sha256
    assert DOWNLOADING not in [event.status for event in events]
    assert [record.name for record in registry.list()] == ["tinystories-260k:f32"]


def test_a_taken_name_is_refused_before_downloading(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_model: Path
) -> None:
    registry.add(stories_model, "tinystories-260k:f32")
    with pytest.raises(RegistryError, match=r"already taken.*--name"):
        pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert hub.downloads() == []


def test_token_is_sent(
    hub: FakeHub,
    registry: ModelRegistry,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
    assert {r.authorization for r in hub.requests} == {"Bearer hf_test_token"}


# --- errors that say what is wrong ------------------------------------------------------------


def test_unknown_repository(hub: FakeHub, registry: ModelRegistry, models_dir: Path) -> None:
    with pytest.raises(RegistryError, match="no repository nobody/nothing-GGUF"):
        pull("nobody/nothing-GGUF:Q4_K_M", registry, models_dir)


def test_unknown_revision(hub: FakeHub, registry: ModelRegistry, models_dir: Path) -> None:
    with pytest.raises(RegistryError, match="has no revision 'v9'"):
        pull(f"hf://{REPO}/{F32_FILE}@v9", registry, models_dir)


def test_unknown_file_lists_the_ggufs(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    with pytest.raises(RegistryError) as error:
        pull(f"hf://{REPO}/missing.gguf", registry, models_dir)
    message = str(error.value)
    assert "has no file 'missing.gguf'" in message
    assert F32_FILE in message and "TinyStories-260K-Q8_0.gguf" in message
    assert "README.md" not in message
    assert hub.downloads() == []


def test_quant_that_matches_nothing_lists_the_ggufs(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path
) -> None:
    with pytest.raises(RegistryError, match=r"no file matches 'Q5_K_M'.*TinyStories-260K-F32"):
        pull(f"{REPO}:Q5_K_M", registry, models_dir)


def test_quant_that_matches_several_lists_them(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    hub.add_file(REPO, "TinyStories-260K-Q4_K_M.gguf", stories_bytes)
    hub.add_file(REPO, "TinyStories-260K-Q4_K_S.gguf", stories_bytes)
    with pytest.raises(RegistryError, match=r"several files match 'Q4_K'.*Q4_K_M.*Q4_K_S"):
        pull(f"{REPO}:Q4_K", registry, models_dir)
    # An exact tag wins over files that merely contain it.
    assert pull(f"{REPO}:Q4_K_M", registry, models_dir).path.name.endswith("Q4_K_M.gguf")


def test_repository_without_quant(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    with pytest.raises(RegistryError, match="no file matches 'Q4_K_M'"):
        pull(REPO, registry, models_dir)  # several files, none the default Q4_K_M
    hub.add_file("solo/one-GGUF", "one-Q6_K.gguf", stories_bytes)
    hub.add_file("solo/one-GGUF", "mmproj-one-F16.gguf", stories_bytes)
    assert pull("solo/one-GGUF", registry, models_dir).name == "one:q6_k"


def test_split_gguf_is_refused_clearly(
    hub: FakeHub, registry: ModelRegistry, models_dir: Path, stories_bytes: bytes
) -> None:
    for part in (1, 2):
        hub.add_file("big/model-GGUF", f"model-Q4_K_M-0000{part}-of-00002.gguf", stories_bytes)
    with pytest.raises(RegistryError, match=r"split GGUF.*llama-gguf-split --merge"):
        pull("big/model-GGUF:Q4_K_M", registry, models_dir)
    assert hub.downloads() == []


def test_unreachable_hub(
    registry: ModelRegistry, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(RegistryError, match="cannot reach the hub"):
        pull(f"hf://{REPO}/{F32_FILE}", registry, models_dir)
