"""The model registry with the real model files: metadata, refusals with reasons, aliases."""

from __future__ import annotations

import math
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoshikage.models.gguf_info import (
    parameter_label,
    quantization_name,
    read_gguf_info,
)
from hoshikage.models.registry import (
    ModelRegistry,
    RegistryError,
    file_sha256,
    normalize_name,
)
from hoshikage.store import Database

STORIES_SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"
MINILM_SHA256 = "8cdebf9d959fad4ed4134d1ec4181d5f9455c44ba83e79b6a916d7d4a2f25c3a"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store.db")
    yield database
    database.close()


@pytest.fixture
def registry(database: Database) -> ModelRegistry:
    return ModelRegistry(database)


@pytest.fixture(scope="session")
def minilm_model(shared_models: Path) -> Path:
    return shared_models / "all-MiniLM-L6-v2-q8_0.gguf"


@pytest.fixture
def stories_copy(tmp_path: Path, stories_model: Path) -> Path:
    """A copy the test may change (the shared files are never modified)."""
    copy = tmp_path / "copies" / "stories.gguf"
    copy.parent.mkdir()
    shutil.copyfile(stories_model, copy)
    return copy


# --- adding and reading back ------------------------------------------------------------------


def test_add_reads_the_gguf_header(registry: ModelRegistry, stories_model: Path) -> None:
    record = registry.add(stories_model, "stories")
    assert record.name == "stories"
    assert record.path == stories_model.resolve()
    assert record.sha256 == STORIES_SHA256
    assert record.digest == f"sha256:{STORIES_SHA256}"
    assert record.size_bytes == stories_model.stat().st_size
    assert record.architecture == "llama"
    assert record.quantization == "F32"  # no general.file_type: the tensors' own type
    assert record.context_length == 2048
    assert record.parameters == 292_800
    assert record.parameter_size == "292.8K"
    assert record.embedding is False
    assert record.keep_alive_s is None
    assert record.source == "local"
    assert record.metadata["llama.block_count"] == 5
    assert record.metadata["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.tokens" not in record.metadata  # a 512-entry array is left out
    assert record.added_at == pytest.approx(time.time(), abs=60)


def test_records_survive_reopening(tmp_path: Path, stories_model: Path) -> None:
    first = Database(tmp_path / "store.db")
    try:
        added = ModelRegistry(first).add(stories_model, "stories", keep_alive_s=30)
    finally:
        first.close()
    second = Database(tmp_path / "store.db")
    try:
        assert "0002_models" in second.applied_migrations()
        assert ModelRegistry(second).get("stories") == added
    finally:
        second.close()


def test_embedding_model_is_detected(registry: ModelRegistry, minilm_model: Path) -> None:
    started = time.perf_counter()
    record = registry.add(minilm_model, "minilm")
    assert time.perf_counter() - started < 5  # 25 MB hashed in a stream
    assert record.sha256 == MINILM_SHA256
    assert record.embedding is True
    assert record.architecture == "bert"
    assert record.quantization == "Q8_0"
    assert record.context_length == 512
    assert record.parameters == 22_565_376
    assert record.parameter_size == "23M"  # the model card's general.size_label
    assert record.metadata["bert.pooling_type"] == 1
    assert record.metadata["general.languages"] == ["en"]  # short arrays are kept


def test_embedding_can_be_told(
    registry: ModelRegistry, minilm_model: Path, stories_model: Path
) -> None:
    assert registry.add(minilm_model, "minilm", embedding=False).embedding is False
    assert registry.add(stories_model, "stories", embedding=True).embedding is True


def test_add_without_checksum(registry: ModelRegistry, stories_model: Path) -> None:
    record = registry.add(stories_model, "stories", compute_sha256=False)
    assert record.sha256 is None
    with pytest.raises(RegistryError, match="no sha256 was recorded"):
        registry.verify("stories")


def test_a_known_checksum_is_recorded_as_given(
    registry: ModelRegistry, stories_model: Path
) -> None:
    assert registry.add(stories_model, "s", sha256="ab" * 32).sha256 == "ab" * 32
    with pytest.raises(RegistryError, match="not a sha256"):
        registry.add(stories_model, "t", sha256="xyz")


def test_relative_paths_are_stored_absolute(
    registry: ModelRegistry, stories_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(stories_copy.parent)
    assert registry.add("stories.gguf", "stories").path == stories_copy


# --- refusals, each with its reason ----------------------------------------------------------


def test_missing_file_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        registry.add(tmp_path / "nothing.gguf", "x")
    assert registry.list() == []


def test_directory_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="is a directory"):
        registry.add(tmp_path, "x")


def test_safetensors_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    header = b'{"weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(RegistryError, match="is a safetensors file, not GGUF"):
        registry.add(path, "x")


def test_text_named_gguf_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="is not a GGUF model file"):
        registry.add(path, "x")


def test_truncated_gguf_is_refused(
    registry: ModelRegistry, stories_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "half.gguf"
    path.write_bytes(stories_model.read_bytes()[:600_000])
    with pytest.raises(RegistryError, match="truncated"):
        registry.add(path, "x")


def test_header_cut_short_is_refused(
    registry: ModelRegistry, stories_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "head.gguf"
    path.write_bytes(stories_model.read_bytes()[:2000])
    with pytest.raises(RegistryError, match="not a readable GGUF file"):
        registry.add(path, "x")


def test_vocabulary_only_gguf_is_refused(registry: ModelRegistry, vocab_dir: Path) -> None:
    with pytest.raises(RegistryError, match="vocabulary-only"):
        registry.add(vocab_dir / "ggml-vocab-qwen2.gguf", "x")


def test_taken_name_is_refused_unless_replaced(
    registry: ModelRegistry, stories_model: Path, minilm_model: Path
) -> None:
    registry.add(stories_model, "mine")
    with pytest.raises(RegistryError, match="already taken"):
        registry.add(minilm_model, "MINE:latest")  # the same name, spelt differently
    assert registry.get("mine").architecture == "llama"
    assert registry.add(minilm_model, "mine", replace=True).architecture == "bert"
    assert [record.name for record in registry.list()] == ["mine"]


@pytest.mark.parametrize(
    "name", ["", "  ", "Bad Name", "-x", "a:b:c", "../x", "x/", "a:", "ü", "x" * 201]
)
def test_invalid_names_are_refused(registry: ModelRegistry, stories_model: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.add(stories_model, name)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Qwen2.5:0.5B", "qwen2.5:0.5b"),
        ("stories:latest", "stories"),
        ("hf.co/owner/Repo-GGUF:Q4_K_M", "hf.co/owner/repo-gguf:q4_k_m"),
        (" llama_3 ", "llama_3"),
    ],
)
def test_names_are_normalised(name: str, canonical: str) -> None:
    assert normalize_name(name) == canonical


# --- finding ----------------------------------------------------------------------------------


def test_find_accepts_latest_and_any_case(registry: ModelRegistry, stories_model: Path) -> None:
    registry.add(stories_model, "stories")
    for name in ("stories", "stories:latest", "Stories", "STORIES:LATEST"):
        found = registry.find(name)
        assert found is not None and found.name == "stories"
    assert registry.find("stories:q4") is None
    assert registry.find("not a name!") is None


def test_get_unknown_says_where_to_look(registry: ModelRegistry, stories_model: Path) -> None:
    registry.add(stories_model, "stories")
    with pytest.raises(RegistryError, match=r"unknown model 'nope' \(see hoshikage models ls\)"):
        registry.get("nope")
    with pytest.raises(RegistryError, match="did you mean 'stories'"):
        registry.get("storys")


def test_list_is_sorted_by_name(
    registry: ModelRegistry, stories_model: Path, minilm_model: Path
) -> None:
    registry.add(stories_model, "zeta")
    registry.add(minilm_model, "alpha")
    assert [record.name for record in registry.list()] == ["alpha", "zeta"]


# --- remove, copy, keep-alive ------------------------------------------------------------------


def test_remove_keeps_files_added_from_elsewhere(
    registry: ModelRegistry, stories_copy: Path, tmp_path: Path
) -> None:
    registry.add(stories_copy, "stories")
    removed = registry.remove("stories:latest", delete_file_in=tmp_path / "models")
    assert removed.name == "stories"
    assert registry.find("stories") is None
    assert stories_copy.exists()
    with pytest.raises(RegistryError, match="unknown model"):
        registry.remove("stories")


def test_remove_deletes_owned_file_with_its_last_alias(
    registry: ModelRegistry, stories_model: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    pulled = models / "owner--repo" / "stories.gguf"
    pulled.parent.mkdir(parents=True)
    shutil.copyfile(stories_model, pulled)
    registry.add(pulled, "one")
    registry.copy("one", "two")
    registry.remove("one", delete_file_in=models)
    assert pulled.exists()  # "two" still names it
    registry.remove("two", delete_file_in=models)
    assert not pulled.exists()
    assert not pulled.parent.exists()  # the empty repository folder goes too
    assert models.exists()


def test_copy_is_a_second_name_for_the_same_file(
    registry: ModelRegistry, stories_model: Path, minilm_model: Path
) -> None:
    original = registry.add(stories_model, "stories", keep_alive_s=10)
    copy = registry.copy("stories", "Story:Tiny")
    assert copy.name == "story:tiny"
    assert (copy.path, copy.sha256, copy.metadata, copy.keep_alive_s) == (
        original.path,
        original.sha256,
        original.metadata,
        10,
    )
    assert {record.name for record in registry.list()} == {"stories", "story:tiny"}
    registry.add(minilm_model, "minilm")
    with pytest.raises(RegistryError, match="already taken"):
        registry.copy("stories", "minilm")
    assert registry.copy("stories", "minilm", replace=True).architecture == "llama"
    with pytest.raises(RegistryError, match="unknown model"):
        registry.copy("nope", "other")
    with pytest.raises(RegistryError, match="own name"):
        registry.copy("stories", "stories:latest")


def test_keep_alive_per_model(registry: ModelRegistry, stories_model: Path) -> None:
    registry.add(stories_model, "stories")
    assert registry.set_keep_alive("stories", 60).keep_alive_s == 60
    assert registry.get("stories").keep_alive_s == 60
    assert registry.set_keep_alive("stories", -1).keep_alive_s == -1
    assert registry.set_keep_alive("stories", None).keep_alive_s is None
    assert registry.get("stories").keep_alive_s is None
    with pytest.raises(RegistryError, match="keep_alive"):
        registry.set_keep_alive("stories", math.nan)
    with pytest.raises(RegistryError, match="unknown model"):
        registry.set_keep_alive("nope", 5)


# --- verify -----------------------------------------------------------------------------------


def test_verify_detects_a_changed_file(registry: ModelRegistry, stories_copy: Path) -> None:
    registry.add(stories_copy, "stories")
    assert registry.verify("stories") is True
    data = bytearray(stories_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    stories_copy.write_bytes(bytes(data))
    assert registry.verify("stories") is False
    stories_copy.unlink()
    with pytest.raises(RegistryError, match="missing"):
        registry.verify("stories")


def test_file_sha256_streams_in_chunks(stories_model: Path) -> None:
    assert file_sha256(stories_model) == STORIES_SHA256
    assert file_sha256(stories_model, chunk_bytes=4096) == STORIES_SHA256


# --- the GGUF header reader -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(0, "F32"), (1, "F16"), (7, "Q8_0"), (15, "Q4_K_M"), (32, "BF16"), (1024 | 15, "Q4_K_M")],
)
def test_quantization_names(file_type: int, name: str) -> None:
    assert quantization_name(file_type) == name


def test_unknown_quantization_keeps_the_number() -> None:
    assert quantization_name(999) == "ftype 999"


@pytest.mark.parametrize(
    ("count", "label"),
    [(None, None), (0, None), (999, "999"), (292_800, "292.8K"), (7_615_616_512, "7.6B")],
)
def test_parameter_labels(count: int | None, label: str | None) -> None:
    assert parameter_label(count) == label


def test_big_vocabulary_header_is_read_quickly(vocab_dir: Path) -> None:
    started = time.perf_counter()
    info = read_gguf_info(vocab_dir / "ggml-vocab-qwen2.gguf")
    assert time.perf_counter() - started < 2  # 151,936 tokens and their merges skipped
    assert info.architecture == "qwen2"
    assert info.context_length == 32768
    assert info.tensors == ()
    assert "{%" in info.metadata["tokenizer.chat_template"]
