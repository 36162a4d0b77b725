"""The engine's front door: load a model, turn chats and prompts into token streams."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hoshikage.engine.backend import resolve_offload
from hoshikage.engine.formats import require_gguf
from hoshikage.engine.generation import Generation
from hoshikage.engine.model import LlamaModel
from hoshikage.engine.scheduler import ContextConfig, Scheduler
from hoshikage.engine.templates import ChatTemplate
from hoshikage.engine.types import (
    ChatMessage,
    ContextOverflowError,
    EmbeddingResult,
    EngineError,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    ToolSpec,
)
from hoshikage.engine.window import fit_messages

log = logging.getLogger(__name__)

# With no max_tokens, keep at least this much of the window free for the answer.
DEFAULT_ANSWER_RESERVE = 512


@dataclass(frozen=True)
class RenderOptions:
    """What the chat template is given beside the messages: tools it lays out itself, and
    switches such as `enable_thinking`."""

    tools: tuple[ToolSpec, ...] | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: hardware placement and context shape."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int | None = None
    use_mmap: bool = True
    use_mlock: bool = False
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    backend: str = "auto"
    gpu_layers: int | None = None
    chat_template: str | None = None
    embedding: bool = False  # load for pooled embeddings (an embedding model)
    parallel: int = 1  # requests decoded together, each with its own full context window


def default_threads() -> int:
    """Physical cores: hyper-threads slow llama.cpp's decoding down rather than up."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class Engine:
    """A loaded model with its chat template and its engine thread.

    `chat` and `complete` return a Generation at once; tokens arrive from the engine thread.
    """

    def __init__(self, path: Path, options: LoadOptions) -> None:
        started = time.perf_counter()
        n_gpu_layers, backend_label = resolve_offload(options.backend, options.gpu_layers)
        self.model = LlamaModel(
            path, n_gpu_layers=n_gpu_layers, use_mmap=options.use_mmap, use_mlock=options.use_mlock
        )
        try:
            n_ctx = options.n_ctx or self.model.n_ctx_train
            if n_ctx > self.model.n_ctx_train > 0:
                # Beyond its training window a model degrades; cap it, as Ollama does.
                log.info(
                    "n_ctx %d capped at the %d tokens %s was trained on",
                    n_ctx,
                    self.model.n_ctx_train,
                    path.name,
                )
                n_ctx = self.model.n_ctx_train
            self.template = ChatTemplate.resolve(
                options.chat_template,
                self.model.chat_template(),
                bos_token=self.model.token_text(self.model.bos_id),
                eos_token=self.model.token_text(self.model.eos_id),
            )
            if self.template.is_fallback:
                log.info(
                    "%s has no chat template; using the built-in %r template (set "
                    "chat_template to choose another)",
                    path.name,
                    self.template.origin.removeprefix("built-in:"),
                )
            self.scheduler = Scheduler(
                self.model,
                ContextConfig(
                    n_ctx=n_ctx,
                    n_batch=options.n_batch,
                    n_threads=options.n_threads or default_threads(),
                    flash_attn=options.flash_attn,
                    kv_cache_type=options.kv_cache_type,
                    embedding=options.embedding,
                    n_slots=options.parallel,
                ),
            )
        except BaseException:
            self.model.close()
            raise
        self._closed = False
        metadata = self.model.metadata()
        self.info = ModelInfo(
            path=str(path),
            name=metadata.get("general.name") or path.stem,
            architecture=metadata.get("general.architecture", "unknown"),
            n_params=self.model.n_params,
            size_bytes=self.model.size_bytes,
            n_ctx_train=self.model.n_ctx_train,
            n_ctx=self.scheduler.n_ctx,
            n_layer=self.model.n_layer,
            n_gpu_layers=n_gpu_layers,
            backend=backend_label,
            load_seconds=time.perf_counter() - started,
            chat_template_source=self.template.origin,
            embedding=options.embedding,
            metadata=metadata,
        )
        log.info(
            "loaded %s (%s, %d layers, backend %s) in %.2fs",
            path.name,
            self.info.architecture,
            self.info.n_layer,
            backend_label,
            self.info.load_seconds,
        )

    @staticmethod
    def check_loadable(path: Path, options: LoadOptions) -> None:
        """Refuse early what would fail to load: not a GGUF file, a backend not built in."""
        require_gguf(path)
        resolve_offload(options.backend, options.gpu_layers)

    @property
    def n_ctx(self) -> int:
        return self.scheduler.n_ctx

    def close(self) -> None:
        self._closed = True
        self.scheduler.close()
        self.model.close()

    def _require_open(self) -> None:
        if self._closed:
            raise EngineError("this model has been unloaded; load it again to use it")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- prompts -------------------------------------------------------------------------
    def count_chat_tokens(
        self, messages: Sequence[ChatMessage], *, render: RenderOptions | None = None
    ) -> int:
        self._require_open()
        return len(self.model.tokenize(self._render(messages, render)))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a piece of text inside a prompt (no BOS)."""
        self._require_open()
        return len(self.model.tokenize(text, add_special=False))

    def _render(self, messages: Sequence[ChatMessage], render: RenderOptions | None) -> str:
        if render is None:
            return self.template.render(messages)
        return self.template.render(messages, tools=render.tools, variables=render.variables)

    def prepare_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        drop_oldest: bool = True,
        render: RenderOptions | None = None,
    ) -> PreparedPrompt:
        """Render the template over as much recent history as fits, and tokenise it.

        With max_tokens, that many tokens are kept free for the answer. Without, a
        conversation that fits the window is taken whole and the answer may use the rest
        (it ends with `length` when the window is full, as OpenAI's does); one that does not
        fit loses its oldest turns until the default reserve is free. With drop_oldest
        False, a conversation that does not fit whole is an error instead.
        """

        def count(kept: Sequence[ChatMessage]) -> int:
            return self.count_chat_tokens(kept, render=render)

        reserved = self.answer_reserve(params)
        n_prompt = count(messages)
        if params.max_tokens is None and n_prompt < self.n_ctx:
            reserved = 0
        if n_prompt + reserved > self.n_ctx and not drop_oldest:
            raise ContextOverflowError(
                f"the conversation needs {n_prompt} prompt tokens and {reserved} more are "
                f"reserved for the answer, but the context window holds {self.n_ctx}",
                n_prompt_tokens=n_prompt,
                n_ctx=self.n_ctx,
            )
        kept: Sequence[ChatMessage] = messages
        dropped = 0
        if n_prompt + reserved > self.n_ctx:
            kept, dropped, _ = fit_messages(
                messages, count, self.n_ctx - reserved, n_ctx=self.n_ctx, reserved=reserved
            )
            log.info("dropped the %d oldest messages to fit the context window", dropped)
        text = self._render(kept, render)
        tokens = self.model.tokenize(text)
        return PreparedPrompt(
            tokens, dropped, self._max_new(params, len(tokens)), prompt_tail=text[-64:]
        )

    def prepare_completion(
        self, prompt: str | Sequence[int], params: SamplingParams
    ) -> PreparedPrompt:
        """A prompt (text, or token ids as given) that fits the window with its answer's
        reserve: max_tokens, or at least one token when unset."""
        self._require_open()
        tokens = (
            self.model.tokenize(prompt) if isinstance(prompt, str) else self._checked_tokens(prompt)
        )
        if not tokens:
            raise EngineError("the prompt is empty")
        reserved = 1 if params.max_tokens is None else params.max_tokens
        if len(tokens) + reserved > self.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens and {reserved} more are needed for the "
                f"answer, but the context window holds {self.n_ctx} tokens",
                n_prompt_tokens=len(tokens),
                n_ctx=self.n_ctx,
                input_name="prompt",
            )
        return PreparedPrompt(tokens, 0, self._max_new(params, len(tokens)))

    def _checked_tokens(self, tokens: Sequence[int]) -> list[int]:
        """Token ids a client sent, refused when one is not in the vocabulary."""
        ids = [int(token) for token in tokens]
        bad = next((token for token in ids if not 0 <= token < self.model.n_vocab), None)
        if bad is not None:
            raise EngineError(
                f"token id {bad} is outside the vocabulary (0..{self.model.n_vocab - 1})"
            )
        return ids

    def answer_reserve(self, params: SamplingParams) -> int:
        """Tokens of the window kept free for the answer when history must be dropped (and
        by the context builder, which lays out a session's history)."""
        if params.max_tokens is not None:
            return params.max_tokens
        return min(DEFAULT_ANSWER_RESERVE, self.n_ctx // 4)

    def _max_new(self, params: SamplingParams, n_prompt: int) -> int:
        room = self.n_ctx - n_prompt
        return room if params.max_tokens is None else min(params.max_tokens, room)

    # --- generation ----------------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        if not messages:
            raise EngineError("a chat needs at least one message")
        return self.generate(self.prepare_chat(messages, params), params)

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        return self.generate(self.prepare_completion(prompt, params), params)

    def embed(
        self, texts: Sequence[str] | Sequence[Sequence[int]], *, truncate: bool = False
    ) -> Future[EmbeddingResult]:
        """Pooled, L2-normalised embeddings of each text (or list of token ids, as OpenAI's
        clients send them), computed on the engine thread.

        An input longer than the model's window is an error, or with `truncate` is cut to
        the window (its start is embedded)."""
        self._require_open()
        if not self.info.embedding:
            raise EngineError(f"{self.info.name} is not loaded as an embedding model")
        inputs = [
            self.model.tokenize(text) if isinstance(text, str) else self._checked_tokens(text)
            for text in texts
        ]
        if truncate:
            cut = sum(len(tokens) > self.n_ctx for tokens in inputs)
            if cut:
                log.info("truncated %d of %d inputs to %d tokens", cut, len(inputs), self.n_ctx)
            inputs = [tokens[: self.n_ctx] for tokens in inputs]
        return self.scheduler.submit_embedding(inputs)

    def generate(self, prepared: PreparedPrompt, params: SamplingParams) -> Generation:
        self._require_open()
        if self.info.embedding:
            raise EngineError(f"{self.info.name} is an embedding model; it cannot generate text")
        return self.scheduler.submit(prepared, params)

    def generate_choices(
        self, prepared: PreparedPrompt, params: SamplingParams, n: int
    ) -> list[Generation]:
        """n answers to one prompt (OpenAI's `n`), which is evaluated once: choice i samples
        with seed params.seed + i when a seed is given. They need n slots at once: n above
        the parallel setting is an error; with fewer free, they wait their turn together."""
        self._require_open()
        if self.info.embedding:
            raise EngineError(f"{self.info.name} is an embedding model; it cannot generate text")
        return self.scheduler.submit_choices(prepared, params, n)
