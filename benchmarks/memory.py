"""Long-term memory: retrieval on a labelled set, and what memory costs time to first token.

    .venv/bin/python -m benchmarks.memory [--threads N] [--repetitions N] [--quick]

1. Retrieval. Thirty personal facts are told in thirty past conversations, among 150
   distractor turns of other conversations. Each fact has a question that asks for it in
   other words; recall@k is the share of questions whose fact is among the first k memories
   the bank returns (semantic search with all-MiniLM-L6-v2, and keyword search without an
   embedding model). Fifteen unrelated questions measure false recall: how many of them bring
   one of the personal facts over the context builder's threshold into a conversation (and
   how many bring any memory: some of the 150 other questions are alike, e.g. two poems).
2. Time to first token. `hoshikage serve` with the Qwen2.5-0.5B-shaped model and MiniLM as
   its embedding model, the facts in memory; each request opens a new session and asks a
   question with max_tokens 1: memory off (`"memory": false`), memory on with a question
   that recalls nothing (the cost of embedding the query and searching), and memory on with
   a question that recalls its fact (plus the memory block's prompt tokens), in turn, in the
   same run. The turns' own indexing runs in the background meanwhile, as it does in use.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.models import CACHE_DIR, SHARED_MODELS, qwen_shaped_model
from benchmarks.serving import HOST, ServerSpec, free_port, running
from hoshikage.engine import LoadOptions, default_threads
from hoshikage.memory.bank import DEFAULT_MIN_SCORE, KEYWORD_MIN_COVERAGE, MemoryBank
from hoshikage.memory.embedder import EngineEmbedder
from hoshikage.store import Database, MemoryFilter, MemoryStore, NewMessage, SessionStore

log = logging.getLogger("benchmarks.memory")

MINILM = SHARED_MODELS / "all-MiniLM-L6-v2-q8_0.gguf"
RESULTS_FILE = CACHE_DIR / "memory-results.json"
LOG_DIR = CACHE_DIR / "memory-logs"
THRESHOLD = DEFAULT_MIN_SCORE

# (what the user once said, a question asking for it in other words)
FACTS: tuple[tuple[str, str], ...] = (
    ("My cat is called Tama.", "What is my cat's name?"),
    ("I work as a nurse at a hospital in Osaka.", "What do I do for a living?"),
    ("My favourite food is ramen with extra garlic.", "Which dish do I like best?"),
    ("I'm allergic to peanuts, so I never eat satay.", "Is there anything I must not eat?"),
    ("My sister Yuki moved to Sapporo last spring.", "Where does my sister live now?"),
    ("I've been learning the cello for two years.", "Which instrument am I practising?"),
    ("The meeting with my landlord is on Friday at 3pm.", "When do I see the landlord?"),
    ("I drive a blue Honda Fit.", "What car do I have?"),
    ("My daughter's birthday is on the 14th of March.", "When was my daughter born?"),
    ("I run 5 kilometres every morning before work.", "How do I exercise?"),
    (
        "My wifi password is written on the back of the router.",
        "Where can I find the wifi password?",
    ),
    ("I prefer tea to coffee, especially sencha.", "What do I like to drink?"),
    ("My passport expires in August next year.", "When does my travel document run out?"),
    ("I'm reading a novel by Haruki Murakami at the moment.", "Which author am I reading?"),
    ("We are planning a trip to Kyoto in November.", "Where are we travelling this autumn?"),
    ("My doctor told me to keep my blood pressure down.", "What health advice did I get?"),
    ("I keep the spare house key in the blue flowerpot.", "Where is the extra key hidden?"),
    ("My son plays goalkeeper for his school football team.", "What position does my boy play?"),
    ("I'm saving money to buy a small flat by the sea.", "What am I saving up for?"),
    ("Our dog Pochi is afraid of thunderstorms.", "What scares our dog?"),
    ("I studied physics at Tohoku University.", "Where did I go to university?"),
    ("My grandmother taught me to make miso soup.", "Who showed me how to cook soup?"),
    ("I take the Yamanote line to the office every day.", "Which train do I ride to work?"),
    ("I'm growing tomatoes and basil on my balcony.", "What do I grow at home?"),
    ("My favourite film is Spirited Away.", "Which movie do I love most?"),
    ("I usually go to bed around 11pm.", "What time do I sleep?"),
    ("My brother is a chef in a French restaurant.", "What is my brother's job?"),
    ("I broke my left wrist skiing in 2019.", "Have I ever had an injury?"),
    ("I speak Japanese, English and a little Spanish.", "Which languages can I speak?"),
    ("My electricity bill is due on the 25th of each month.", "When must I pay for power?"),
)
UNRELATED = (
    "How do I bake sourdough bread?",
    "What is the capital of France?",
    "Explain quantum entanglement simply.",
    "Write a haiku about autumn leaves.",
    "How many moons does Jupiter have?",
    "What is a good name for a fantasy dragon?",
    "Convert 100 degrees Fahrenheit to Celsius.",
    "Who wrote Pride and Prejudice?",
    "How does a transistor work?",
    "Give me a synonym for happy.",
    "What is the square root of 144?",
    "Summarise the plot of Hamlet.",
    "Why is the sky blue?",
    "How do vaccines train the immune system?",
    "Recommend a board game for four players.",
)
_DISTRACTOR_TOPICS = (
    ("Can you explain how {} works?", ["recursion", "a heat pump", "compound interest",
     "photosynthesis", "a hash table", "the stock market", "jet lag", "a bicycle gear"]),
    ("Write a short poem about {}.", ["the sea", "city lights", "an old bridge", "rain",
     "a lighthouse", "winter mornings", "a train station", "fireflies"]),
    ("What are the rules of {}?", ["chess", "rugby", "go", "mahjong", "cricket", "bridge",
     "curling", "shogi"]),
    ("Translate '{}' into Japanese.", ["good morning", "thank you very much", "see you later",
     "where is the station", "how much is this", "I am lost", "nice to meet you", "cheers"]),
)  # fmt: skip


def distractors(count: int) -> list[tuple[str, str]]:
    chooser = random.Random(3)
    turns = []
    for index in range(count):
        template, subjects = _DISTRACTOR_TOPICS[index % len(_DISTRACTOR_TOPICS)]
        question = template.format(chooser.choice(subjects))
        turns.append((question, f"Here is an answer about that ({index})."))
    return turns


# --- 1. retrieval -----------------------------------------------------------------------------
@dataclass
class Retrieval:
    mode: str
    recall_at_1: float
    recall_at_5: float
    mrr: float
    facts_over_threshold: float  # right fact among the memories that would enter the context
    unrelated_with_facts: int  # unrelated questions that would bring a personal fact in
    unrelated_with_any: int  # … or any memory (other questions of the 150 may be alike)
    search_ms: float  # mean time of one search (query embedding included)


def retrieval(bank: MemoryBank, sessions: SessionStore, threshold: float) -> Retrieval:
    fact_sessions = []
    turns = [(fact, "I will remember that.") for fact, _ in FACTS] + distractors(150)
    random.Random(5).shuffle(turns)
    for question, answer in turns:
        session = sessions.create()
        sessions.append(session.id, [NewMessage("user", question), NewMessage("assistant", answer)])
        if any(question == fact for fact, _ in FACTS):
            fact_sessions.append(question)
    bank.catch_up()
    ranks: list[int | None] = []
    over = 0
    timings = []
    asking = sessions.create().id
    where = MemoryFilter("local", exclude_session=asking)
    for fact, question in FACTS:
        started = time.perf_counter()
        hits = bank.search(question, where, limit=5)
        timings.append(time.perf_counter() - started)
        texts = [hit.record.text for hit in hits]
        ranks.append(texts.index(fact) + 1 if fact in texts else None)
        over += any(h.record.text == fact and h.score >= threshold for h in hits)
    facts = {fact for fact, _ in FACTS}
    with_facts = with_any = 0
    for question in UNRELATED:
        started = time.perf_counter()
        hits = bank.search(question, where, limit=5, min_score=threshold)
        timings.append(time.perf_counter() - started)
        with_any += bool(hits)
        with_facts += any(hit.record.text in facts for hit in hits)
    n = len(FACTS)
    return Retrieval(
        mode=bank.mode,
        recall_at_1=sum(rank == 1 for rank in ranks) / n,
        recall_at_5=sum(rank is not None for rank in ranks) / n,
        mrr=sum(1 / rank for rank in ranks if rank) / n,
        facts_over_threshold=over / n,
        unrelated_with_facts=with_facts,
        unrelated_with_any=with_any,
        search_ms=statistics.mean(timings) * 1000,
    )


def measure_retrieval(threads: int) -> list[Retrieval]:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("semantic", "keyword"):
            database = Database(Path(folder) / f"{mode}.db")
            embedder = (
                EngineEmbedder(MINILM, LoadOptions(n_threads=threads))
                if mode == "semantic"
                else None
            )
            try:
                bank = MemoryBank(MemoryStore(database), embedder)
                threshold = THRESHOLD if embedder else KEYWORD_MIN_COVERAGE
                results.append(retrieval(bank, SessionStore(database), threshold))
            finally:
                if embedder is not None:
                    embedder.close()
                database.close()
    return results


# --- 2. time to first token -------------------------------------------------------------------
def server_spec(model: Path, threads: int, home: Path) -> ServerSpec:
    port = free_port()
    config = home / "config.toml"
    config.touch()
    command = [
        sys.executable, "-m", "hoshikage", "serve", "--host", HOST, "--port", str(port),
        "--model", str(model), "--embedding-model", str(MINILM), "--threads", str(threads),
        "--n-ctx", "2048", "--parallel", "1", "--backend", "cpu", "--keep-alive", "-1",
        "--log-level", "info", "--shutdown-grace", "1",
    ]  # fmt: skip
    return ServerSpec(
        kind="hoshikage",
        label="hoshikage serve (memory)",
        command=command,
        port=port,
        health_path="/health",
        model=model.stem,
        env={"HOSHIKAGE_DATA_DIR": str(home / "data"), "HOSHIKAGE_CONFIG_FILE": str(config)},
    )


def ask(client: httpx.Client, spec: ServerSpec, question: str, memory: bool) -> dict[str, Any]:
    body = {
        "model": spec.model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 1,
        "temperature": 0,
        "session_id": f"bench-{time.monotonic_ns()}",
        "memory": memory,
    }
    started = time.perf_counter()
    response = client.post(spec.base_url + "/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    answer = response.json()
    return {
        "ttft_s": elapsed,
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "memories": len(answer["hoshikage"]["context"]["memories"]),
    }


def measure_ttft(threads: int, repetitions: int) -> dict[str, Any]:
    model = qwen_shaped_model()
    with tempfile.TemporaryDirectory() as home:
        spec = server_spec(model, threads, Path(home))
        with running(spec, LOG_DIR), httpx.Client(timeout=300) as client:
            for fact, _ in FACTS:  # the facts, remembered (embedded by the server itself)
                client.post(spec.base_url + "/v1/memory", json={"text": fact}).raise_for_status()
            ask(client, spec, "Warm-up: hello.", True)
            ask(client, spec, "Warm-up: hello again.", False)
            # Round robin, so that drift over the run falls on every case alike.
            cases: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "on_unrelated": []}
            related = [question for _, question in FACTS]
            for index in range(repetitions):
                question = related[index % len(related)]
                cases["off"].append(ask(client, spec, question, False))
                cases["on"].append(ask(client, spec, question, True))
                unrelated = UNRELATED[index % len(UNRELATED)]
                cases["on_unrelated"].append(ask(client, spec, unrelated, True))

    def median(case: str, key: str) -> float:
        return float(statistics.median(sample[key] for sample in cases[case]))

    return {
        **{
            f"{key}_{case}": median(case, key)
            for case in cases
            for key in ("ttft_s", "prompt_tokens", "memories")
        },
        "samples": cases,
    }


# --- report ---------------------------------------------------------------------------------
def report(retrievals: list[Retrieval], ttft: dict[str, Any], threads: int) -> str:
    lines = [
        f"Memory benchmark ({threads} threads). Retrieval: {len(FACTS)} facts among "
        f"{len(FACTS) + 150} past turns, {len(FACTS)} paraphrased questions, "
        f"{len(UNRELATED)} unrelated ones; threshold {THRESHOLD} (semantic), keyword coverage "
        f"{KEYWORD_MIN_COVERAGE} (keyword).",
        "",
        f"{'search':10} {'recall@1':>9} {'recall@5':>9} {'MRR':>6} {'right fact ≥ threshold':>23} "
        f"{'unrelated → a fact':>19} {'unrelated → any':>16} {'ms/search':>10}",
    ]
    for result in retrievals:
        lines.append(
            f"{result.mode:10} {result.recall_at_1:9.2f} {result.recall_at_5:9.2f} "
            f"{result.mrr:6.2f} {result.facts_over_threshold:23.2f} "
            f"{result.unrelated_with_facts:>12}/{len(UNRELATED):<6} "
            f"{result.unrelated_with_any:>9}/{len(UNRELATED):<6} {result.search_ms:10.1f}"
        )
    off = ttft["ttft_s_off"]

    def row(label: str, case: str) -> str:
        value = ttft[f"ttft_s_{case}"]
        return (
            f"  {label:34} {value * 1000:7.1f} ms  {value / off:5.2f}  "
            f"{(value - off) * 1000:+7.1f} ms  {ttft[f'prompt_tokens_{case}']:5.0f} prompt tokens, "
            f"{ttft[f'memories_{case}']:.0f} memories"
        )

    lines += [
        "",
        "Time to first token, Qwen2.5-0.5B-shaped Q4_K_M, a new session per request, "
        "max_tokens 1 (median; ratio and difference against memory off):",
        row("memory off", "off"),
        row("memory on, nothing relevant", "on_unrelated"),
        row("memory on, memories recalled", "on"),
    ]
    return "\n".join(lines)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--repetitions", type=int, default=10, help="requests per side")
    parser.add_argument("--quick", action="store_true", help="3 requests per side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminated)
    retrievals = measure_retrieval(args.threads)
    ttft = measure_ttft(args.threads, 3 if args.quick else args.repetitions)
    text = report(retrievals, ttft, args.threads)
    print(text)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {"retrieval": [r.__dict__ for r in retrievals], "ttft": ttft, "table": text},
            indent=2,
        ),
        encoding="utf-8",
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (the server it started is stopped)", file=sys.stderr)
        sys.exit(130)
