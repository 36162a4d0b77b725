"""The AMX probe: a child process tells whether llama.cpp's AMX kernels work here."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoshikage.engine import amx_probe


def test_cpu_flags_are_read_on_linux() -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    flags, model = amx_probe._cpu_flags_and_model()
    assert "fpu" in flags or "sse2" in flags
    assert model


def test_child_probe_gives_a_verdict_and_survives_a_crash() -> None:
    # Whatever this CPU does, the probe answers (a crash in the child is an answer).
    assert amx_probe._probe_in_child() in ("works", "broken")


def test_verdict_matches_the_child_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    amx_probe.amx_is_broken.cache_clear()
    try:
        broken = amx_probe.amx_is_broken()
        flags, _ = amx_probe._cpu_flags_and_model()
        if "amx_int8" not in flags or not amx_probe._build_has_amx():
            assert broken is False  # nothing to probe, and no cache written
            assert not (tmp_path / "hoshikage" / "amx-probe.json").exists()
        else:
            assert (tmp_path / "hoshikage" / "amx-probe.json").exists()
            assert broken == (amx_probe._probe_in_child() == "broken")
    finally:
        amx_probe.amx_is_broken.cache_clear()
