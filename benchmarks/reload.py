"""Reload after an idle unload: `hoshikage serve` with and without the warm cache, same run.

    .venv/bin/python -m benchmarks.reload [--threads N] [--quick]

For the random-weight Qwen2.5-0.5B-shaped Q4_K_M model (398 MB, see models.py) and for
stories260K, through the real server and its OpenAI API (`keep_alive` 1 s, so that a model is
unloaded a second after its last request), it measures how long a chat request takes when the
model has to be loaded first:

- first load, cold: the model file's pages evicted from the OS page cache first;
- (a) reload without `ramdisk_path`, the file still in the page cache (a short idle);
- (b) reload without `ramdisk_path`, the file evicted from the page cache (a long idle, after
  which the OS has reclaimed the cache: the file is read from disk again);
- (c) reload with `ramdisk_path` in /dev/shm (tmpfs, RAM): the server loads its copy there, and
  the original file is evicted from the page cache first, as in (b);
- the first load with the warm cache (copy to /dev/shm, then load; cold file);
- the anchor: the same request to a model already loaded (no load at all).

Each figure is the wall time of one non-streamed chat request with max_tokens 1, measured by
the client: its time to first token, load included. Medians of 3 repetitions (1 with
--quick; a first load happens once per server), each over the anchor measured in the same run
(÷ anchor) and less it (− anchor: what the load adds), and the server's own load time from its
log line "loaded NAME in X.XXs" (llama.cpp model and context; the warm-cache copy is not in
it). Prompts are short (about 25 tokens), so that the prefill does not hide the load, and every
request has its own, so the anchor reuses no more than the chat template's first tokens from
the KV cache.

Page cache: pages are evicted with posix_fadvise(POSIX_FADV_DONTNEED), which needs no
privileges for clean pages, and the file's residency is checked before every request with
mincore(2) (the "page cache" column). A page that another process maps cannot be evicted, so
the benchmark loads private copies of the model files, kept in .bench-cache/reload-models/
(the shared files may be open in tests or other benchmarks at the same time).

A server is started per model and setting, the way serving.py starts Hoshikage (free
127.0.0.1 port, own data directory, empty settings file, `--parallel 4 -c 2048`), and always
stopped, and the /dev/shm folder removed, on the way out (Ctrl+C and SIGTERM included).
The table goes to stdout, every sample to .bench-cache/reload-results.json, server logs to
.bench-cache/reload-logs/. Linux only (posix_fadvise, mincore, /dev/shm).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import mmap
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.models import CACHE_DIR, STORIES, qwen_shaped_model
from benchmarks.serving import (
    REQUEST_TIMEOUT,
    Plan,
    ServerSpec,
    hoshikage_has_parallel_flag,
    hoshikage_spec,
    running,
    server_log_path,
    words,
)

log = logging.getLogger("benchmarks.reload")

RESULTS_FILE = CACHE_DIR / "reload-results.json"
LOG_DIR = CACHE_DIR / "reload-logs"
MODEL_COPIES = CACHE_DIR / "reload-models"
SHM = Path("/dev/shm")
KEEP_ALIVE = "1s"
PARALLEL = 4  # the server's default
UNLOAD_TIMEOUT_S = 120.0
POLL_S = 0.05
EVICTED_AT_MOST = 0.01  # residency after eviction above this: a warning

ANCHOR = "anchor"
COLD = "first_load_cold"
RELOAD_CACHED = "reload_a_page_cache"
RELOAD_EVICTED = "reload_b_evicted"
WARM_FIRST = "first_load_warm_cache"
RELOAD_WARM = "reload_c_warm_cache"
CASES = {
    ANCHOR: "anchor: model already loaded (no load)",
    COLD: "first load, cold (file evicted)",
    RELOAD_CACHED: "(a) reload, no warm cache, file in page cache",
    RELOAD_EVICTED: "(b) reload, no warm cache, file evicted",
    WARM_FIRST: "first load, warm cache (copy to /dev/shm + load)",
    RELOAD_WARM: "(c) reload from warm cache in /dev/shm, original evicted",
}
LOADS_EXPECTED = {ANCHOR: 0}  # every other case is exactly one load

_LOADED_LINE = re.compile(r"hoshikage\.models\.manager: loaded (\S+) in ([0-9.]+)s")
_COPIED_LINE = re.compile(r"hoshikage\.models\.manager: copied (\S+) to the warm cache")


# --- the page cache ----------------------------------------------------------------------------
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_long,
    ]  # fmt: skip
    libc.mincore.restype = ctypes.c_int
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


LIBC = _libc()
MAP_FAILED = ctypes.c_void_p(-1).value


def resident_fraction(path: Path) -> float | None:
    """The share of the file's pages in the page cache (mincore); None if it cannot tell.

    Mapping the file to ask does not read it: mincore only reports."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    if LIBC is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        address = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == MAP_FAILED:
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = (ctypes.c_ubyte * pages)()
            if LIBC.mincore(address, size, vector) != 0:
                return None
            return sum(byte & 1 for byte in bytes(vector)) / pages
        finally:
            LIBC.munmap(address, size)
    finally:
        os.close(fd)


def evict(path: Path) -> float | None:
    """Drop the file's pages from the page cache; its residency afterwards.

    Dirty pages are written first (fsync), since only clean ones can be dropped; pages that a
    process has mapped stay."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident_fraction(path)


def private_copy(source: Path, folder: Path = MODEL_COPIES) -> Path:
    """A copy of the model file that no other process has open, made once (atomically)."""
    target = folder / source.name
    stat = source.stat()
    if target.exists():
        have = target.stat()
        if have.st_size == stat.st_size and have.st_mtime >= stat.st_mtime:
            return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    log.info("copying %s to %s", source.name, folder)
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


# --- one server ------------------------------------------------------------------------------
@dataclass
class Sample:
    case: str
    ttft_s: float
    server_load_s: float | None  # from the server's log line; None if it did not load
    loads: int  # loads the server counted during the request
    warm_copy_made: bool  # the server copied the file to the warm cache during the request
    resident_before: float | None  # the original file's page-cache residency
    resident_after: float | None
    prompt_tokens: int | None
    cached_tokens: int | None
    unload_wait_s: float | None = None  # from the response to the unload (keep_alive)


@dataclass
class Server:
    spec: ServerSpec
    log_path: Path
    model_file: Path  # the file the server was given (its warm copy, if any, is elsewhere)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=REQUEST_TIMEOUT))
    log_offset: int = 0
    requests: int = 0

    def status(self) -> dict[str, Any]:
        response = self.client.get(self.spec.base_url + "/v1/status")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def loaded(self, status: dict[str, Any]) -> bool:
        return any(model.get("name") == self.spec.model for model in status.get("models", []))

    def wait_unloaded(self) -> float:
        """Poll /v1/status until the model is unloaded and its engine closed; seconds waited.

        The model leaves the list before its engine is closed (and its file unmapped); the
        unload counter moves after that."""
        started = time.perf_counter()
        deadline = started + UNLOAD_TIMEOUT_S
        while time.perf_counter() < deadline:
            status = self.status()
            if not self.loaded(status) and status["model_unloads"] >= status["model_loads"]:
                return time.perf_counter() - started
            time.sleep(POLL_S)
        raise RuntimeError(f"{self.spec.label}: model still loaded after {UNLOAD_TIMEOUT_S} s")

    def read_log(self) -> tuple[list[float], bool]:
        """Load times and whether a warm copy was made, in log lines since the last call."""
        with self.log_path.open("rb") as file:
            file.seek(self.log_offset)
            text = file.read()
        end = text.rfind(b"\n") + 1  # whole lines only
        self.log_offset += end
        lines = text[:end].decode("utf-8", errors="replace")
        loads = [float(m.group(2)) for m in _LOADED_LINE.finditer(lines)]
        return loads, _COPIED_LINE.search(lines) is not None

    def chat(self) -> tuple[float, dict[str, Any]]:
        """One non-streamed chat request, max_tokens 1: (wall time, usage)."""
        self.requests += 1
        seed = f"{self.spec.label}-{self.requests}"
        body: dict[str, Any] = {
            "model": self.spec.model,
            # Short, so that the load is not hidden behind the prompt's prefill; a system
            # prompt that begins with a number of its own, so that no KV prefix beyond the
            # template's first tokens is reused.
            "messages": [
                {"role": "system", "content": f"{self.requests}: {words(seed + 's', 4)}."},
                {"role": "user", "content": f"{words(seed, 6)}?"},
            ],
            "max_tokens": 1,
            "temperature": 0.0,
            "stream": False,
            **self.spec.extra_body,
        }
        started = time.perf_counter()
        response = self.client.post(self.spec.base_url + "/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(
                f"{self.spec.label}: HTTP {response.status_code}: {response.text[:800]}"
            )
        usage: dict[str, Any] = response.json().get("usage") or {}
        return elapsed, usage

    def sample(self, case: str, original: Path) -> Sample:
        before = resident_fraction(original)
        loads_before = self.status()["model_loads"]
        self.read_log()  # skip whatever came before this request
        elapsed, usage = self.chat()
        loads = self.status()["model_loads"] - loads_before
        load_times, copied = self.read_log()
        details = usage.get("prompt_tokens_details") or {}
        result = Sample(
            case=case,
            ttft_s=elapsed,
            server_load_s=load_times[-1] if load_times else None,
            loads=loads,
            warm_copy_made=copied,
            resident_before=before,
            resident_after=resident_fraction(original),
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )
        log.info(
            "  %-22s %8.1f ms  server load %s  page cache before %s",
            case,
            elapsed * 1e3,
            "—" if result.server_load_s is None else f"{result.server_load_s * 1e3:.0f} ms",
            _percent(before),
        )
        return result


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.0f}%"


@contextmanager
def server(spec: ServerSpec, model_file: Path) -> Iterator[Server]:
    with running(spec, LOG_DIR):
        handle = Server(spec, server_log_path(spec.label, LOG_DIR), model_file)
        try:
            handle.wait_unloaded()  # nothing loaded yet (the server loads on demand)
            yield handle
        finally:
            handle.client.close()


# --- the measures ----------------------------------------------------------------------------
class Run:
    """Samples of one model, with the checks that make them mean what they claim."""

    def __init__(self, name: str, warnings: list[str]) -> None:
        self.name = name
        self.samples: list[Sample] = []
        self.warnings = warnings

    def evict(self, path: Path) -> None:
        left = evict(path)
        if left is not None and left > EVICTED_AT_MOST:
            self.warn(f"{path.name}: {left:.0%} of its pages still cached after eviction")

    def warn(self, message: str) -> None:
        log.warning("%s: %s", self.name, message)
        self.warnings.append(f"{self.name}: {message}")

    def take(self, handle: Server, case: str, original: Path, *, unload: bool) -> None:
        sample = handle.sample(case, original)
        expected = LOADS_EXPECTED.get(case, 1)
        if sample.loads != expected:
            self.warn(f"{case}: {sample.loads} loads during the request, expected {expected}")
        if case == RELOAD_WARM and sample.warm_copy_made:
            self.warn(f"{case}: the server copied the file again instead of reusing its copy")
        if unload:
            sample.unload_wait_s = handle.wait_unloaded()
        self.samples.append(sample)


def measure_model(
    name: str, model: Path, plan: Plan, reps: int, has_parallel: bool, home: Path, shm: Path
) -> dict[str, Any]:
    warnings: list[str] = []
    run = Run(name, warnings)
    label = f"hoshikage reload {model.stem}"
    env = {"HOSHIKAGE_LOG_DIR": str(home / "logs")}  # not the user's log file

    def spec_for(suffix: str, extra_args: tuple[str, ...] = ()) -> ServerSpec:
        spec = hoshikage_spec(
            model,
            plan,
            PARALLEL,
            has_parallel,
            home,
            keep_alive=KEEP_ALIVE,
            log_level="info",  # the "loaded NAME in X.XXs" lines
            extra_args=extra_args,
        )
        return dataclasses.replace(spec, label=label + suffix, env={**spec.env, **env})

    log.info("== %s: without warm cache", name)
    with server(spec_for(""), model) as handle:
        run.evict(model)
        run.take(handle, COLD, model, unload=False)
        for _ in range(reps):
            run.take(handle, ANCHOR, model, unload=False)
        handle.wait_unloaded()
        for _ in range(reps):  # interleaved, so that drift in the machine's load spreads evenly
            cached = resident_fraction(model)
            if cached is not None and cached < 0.99:
                run.warn(f"{RELOAD_CACHED}: only {cached:.0%} of the file in the page cache")
            run.take(handle, RELOAD_CACHED, model, unload=True)
            run.evict(model)
            run.take(handle, RELOAD_EVICTED, model, unload=True)

    warm_dir = shm / model.stem
    log.info("== %s: with warm cache %s", name, warm_dir)
    with server(spec_for(" warm-cache", ("--ramdisk-path", str(warm_dir))), model) as handle:
        run.evict(model)
        run.take(handle, WARM_FIRST, model, unload=False)
        for _ in range(reps):
            run.take(handle, ANCHOR, model, unload=False)
        handle.wait_unloaded()
        copy = warm_dir / model.name
        if not copy.exists():
            run.warn(f"no warm copy at {copy}")
        for _ in range(reps):
            run.evict(model)
            run.take(handle, RELOAD_WARM, model, unload=True)
    shutil.rmtree(warm_dir, ignore_errors=True)

    return {
        "path": str(model),
        "size_bytes": model.stat().st_size,
        "samples": [asdict(sample) for sample in run.samples],
        "summary": summarise(run.samples),
        "warnings": warnings,
    }


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for case in CASES:
        of_case = [sample for sample in samples if sample.case == case]
        if not of_case:
            continue
        ttfts = [sample.ttft_s for sample in of_case]
        summary[case] = {
            "n": len(of_case),
            "ttft_s": statistics.median(ttfts),
            "ttft_min_s": min(ttfts),
            "ttft_max_s": max(ttfts),
            "server_load_s": _median([sample.server_load_s for sample in of_case]),
            "resident_before": _median([sample.resident_before for sample in of_case]),
        }
    anchor = summary.get(ANCHOR, {}).get("ttft_s")
    for values in summary.values():
        values["over_anchor"] = values["ttft_s"] / anchor if anchor else None
        values["beyond_anchor_s"] = None if anchor is None else values["ttft_s"] - anchor
    return summary


# --- the table -------------------------------------------------------------------------------
HEADERS = (
    "case", "n", "TTFT ms", "min–max ms", "server load ms", "÷ anchor", "− anchor ms",
    "page cache",
)  # fmt: skip


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, data in results["models"].items():
        rows.append((f"{name} ({data['size_bytes'] / 1e6:.1f} MB)",) + ("",) * (len(HEADERS) - 1))
        for case, label in CASES.items():
            values = data["summary"].get(case)
            if values is None:
                continue
            load = values["server_load_s"]
            ratio = values["over_anchor"]
            beyond = values["beyond_anchor_s"]
            rows.append(
                (
                    "  " + label,
                    str(values["n"]),
                    f"{values['ttft_s'] * 1e3:.1f}",
                    f"{values['ttft_min_s'] * 1e3:.0f}–{values['ttft_max_s'] * 1e3:.0f}",
                    "—" if load is None else f"{load * 1e3:.0f}",
                    "—" if ratio is None else f"{ratio:.2f}",
                    "—" if beyond is None or case == ANCHOR else f"{beyond * 1e3:+.0f}",
                    _percent(values["resident_before"]),
                )
            )
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in (HEADERS, *rows)) for i in range(len(HEADERS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    header = line(HEADERS)
    return "\n".join([header, "-" * len(header), *(line(row) for row in rows)])


# --- main ------------------------------------------------------------------------------------
def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through `running` and the /dev/shm cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition: a smoke run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=RESULTS_FILE, help="results file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _terminated)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if LIBC is None or not SHM.is_dir():
        sys.exit("this benchmark needs Linux: posix_fadvise, mincore and /dev/shm")
    plan = Plan.make(args.threads, args.quick)  # threads and n_ctx, as serving.py uses them
    reps = 1 if args.quick else 3
    started = time.perf_counter()

    models = {
        "qwen2.5-0.5b-shape Q4_K_M": private_copy(qwen_shaped_model()),
        "stories260K": private_copy(STORIES),
    }
    has_parallel = hoshikage_has_parallel_flag()
    results: dict[str, Any] = {
        "threads": plan.threads,
        "n_ctx": plan.n_ctx,
        "parallel": PARALLEL,
        "keep_alive": KEEP_ALIVE,
        "repetitions": reps,
        "quick": args.quick,
        "models": {},
        "errors": {},
        "warnings": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="hoshikage-reload-") as home,
        tempfile.TemporaryDirectory(prefix="hoshikage-reload-", dir=SHM) as shm,
    ):
        for name, model in models.items():
            try:
                data = measure_model(name, model, plan, reps, has_parallel, Path(home), Path(shm))
            except Exception as exc:  # the other model's figures still count
                log.error("%s failed: %s", name, exc)
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                continue
            results["models"][name] = data
            results["warnings"] += data["warnings"]

    results["elapsed_s"] = time.perf_counter() - started
    rows = table_rows(results)
    results["table"] = [dict(zip(HEADERS, row, strict=True)) for row in rows]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")

    quick = " (--quick: one repetition, a smoke run)" if args.quick else ""
    threads = f"{plan.threads} thread{'s' if plan.threads != 1 else ''}"
    print(
        f"\nReload after idle unload{quick}: hoshikage serve --parallel {PARALLEL} "
        f"-c {plan.n_ctx} --keep-alive {KEEP_ALIVE}, {threads}. TTFT = client wall time of a "
        f"chat request with max_tokens 1 (load included), median of {reps} (first loads: 1); "
        f"− anchor = TTFT − anchor's TTFT; server load = its log's 'loaded ... in Xs'; "
        f"page cache = the model file's pages cached before the request."
    )
    print(format_table(rows))
    for warning in results["warnings"]:
        print(f"warning: {warning}")
    for what, error in results["errors"].items():
        print(f"error: {what}: {error.splitlines()[0] if error else ''}")
    print(f"({results['elapsed_s']:.0f} s; all samples in {args.json})")
    if results["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (servers stopped, /dev/shm copies removed)", file=sys.stderr)
        sys.exit(130)
