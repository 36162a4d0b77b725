"""hoshikage batch: prompts through the batching scheduler, results in input order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hoshikage.engine import Engine, LoadOptions, SamplingParams


def test_batch_keeps_order_reports_bad_lines_and_matches_single_runs(
    tmp_path: Path, stories_model: Path, isolated_env: Path
) -> None:
    prompts = ["Once upon a time", "The sun", "Lily and Ben", "One day, a bird"]
    lines = [json.dumps({"id": i, "prompt": p, "max_tokens": 10}) for i, p in enumerate(prompts)]
    lines.insert(2, "{broken")
    lines.insert(4, json.dumps({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}))
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "hoshikage", "batch", str(source), "-o", str(target)]
    command += ["-m", str(stories_model), "--parallel", "3", "--temperature", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "line 3: not JSON" in done.stderr
    assert "line 5:" in done.stderr and "exactly one of" in done.stderr
    results = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in results] == [1, 2, 3, 4, 5, 6]
    answered = [r for r in results if "text" in r]
    assert [r["id"] for r in answered] == [0, 1, 2, 3]
    # Decoded three at a time, each answer is what the prompt gives alone (greedy).
    with Engine(stories_model, LoadOptions(n_ctx=4096)) as engine:
        for result, prompt in zip(answered, prompts, strict=True):
            alone = engine.complete(
                prompt, SamplingParams(temperature=0.0, max_tokens=10, repeat_penalty=1.1)
            )
            alone.wait()
            assert result["text"] == alone.text
            assert result["usage"]["completion_tokens"] == 10


def test_batch_with_an_unreadable_input_fails_cleanly(tmp_path: Path, isolated_env: Path) -> None:
    command = [sys.executable, "-m", "hoshikage", "batch", str(tmp_path / "missing.jsonl")]
    command += ["-o", str(tmp_path / "out.jsonl"), "-m", "x"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "Traceback" not in done.stderr
