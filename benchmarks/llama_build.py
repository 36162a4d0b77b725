"""llama.cpp's `llama-bench` and `llama-server`, built from llama-cpp-python's own sources.

The llama-cpp-python source distribution that pip downloads vendors the exact llama.cpp it
binds, so building its tools gives C++ anchors on the very llama.cpp Hoshikage runs on. The
sdist, the unpacked sources and the CMake build live in `.bench-cache/` and are reused: the
first build takes several minutes, later calls only check that the binaries are up to date.

    python -m benchmarks.llama_build      # build (or find) the binaries and print their paths

Where llama.cpp's AMX kernels crash on this machine (see the README), the build turns AMX off
(`-mno-amx-*` after `-march=native`; GCC and Clang let explicit -mno- flags win), just as
Hoshikage and the llama-cpp-python anchors avoid the AMX buffer type there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.models import CACHE_DIR

log = logging.getLogger(__name__)

TARGETS = ("llama-server", "llama-bench")
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
BUILD_TIMEOUT_S = 3 * 3600  # a bound, not an expectation: ~10-20 min on 2 cores
DOWNLOAD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class LlamaBinaries:
    server: Path
    bench: Path
    version: str  # the llama-cpp-python release whose vendored llama.cpp was built
    amx_disabled: bool
    build_s: float  # seconds spent building in this call (0 when nothing was out of date)


def llama_cpp_python_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def _sdist(version: str, cache_dir: Path) -> Path:
    """The llama-cpp-python source distribution, downloaded by pip on first use."""
    folder = cache_dir / "sdist"
    for name in (f"llama_cpp_python-{version}.tar.gz", f"llama-cpp-python-{version}.tar.gz"):
        if (folder / name).exists():
            return folder / name
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading the llama-cpp-python %s source distribution (~75 MB)", version)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        f"llama-cpp-python=={version}", "-d", str(folder),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=DOWNLOAD_TIMEOUT_S)
    found = sorted(folder.glob(f"llama*cpp*python-{version}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no llama-cpp-python {version} sdist in {folder}")
    return found[0]


def _sources(version: str, cache_dir: Path) -> Path:
    """llama.cpp's sources, as vendored in the sdist (unpacked once)."""
    unpacked = cache_dir / "sdist" / f"llama_cpp_python-{version}"
    source = unpacked / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    archive = _sdist(version, cache_dir)
    log.info("unpacking %s", archive.name)
    staging = cache_dir / "sdist" / f".unpack-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    (top,) = list(staging.iterdir())
    shutil.rmtree(unpacked, ignore_errors=True)
    top.rename(unpacked)
    shutil.rmtree(staging, ignore_errors=True)
    if not (source / "CMakeLists.txt").exists():
        raise RuntimeError(f"no llama.cpp sources in {archive} (expected vendor/llama.cpp)")
    return source


def _cmake_options(disable_amx: bool) -> list[str]:
    options = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",  # like llama-cpp-python's default wheel build: -march=native
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_COMMON=ON",
        "-DLLAMA_BUILD_TOOLS=ON",  # tools/llama-bench
        "-DLLAMA_BUILD_SERVER=ON",  # tools/server
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_UI=OFF",  # no npm build of the web UI
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # and no download of a prebuilt one
        "-DLLAMA_OPENSSL=OFF",
    ]
    if disable_amx:
        options += [f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}"]
    return options


def _amx_must_be_disabled() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from hoshikage.engine.amx_probe import amx_is_broken

    return amx_is_broken()


def _run_logged(command: list[str], log_file: Path, what: str) -> None:
    with log_file.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False
        )
    if result.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise RuntimeError(f"{what} failed (see {log_file}):\n" + "\n".join(tail))


def build_llama_tools(cache_dir: Path = CACHE_DIR, jobs: int | None = None) -> LlamaBinaries:
    """Build (or find up to date) llama-server and llama-bench; see the module docstring."""
    version = llama_cpp_python_version()
    disable_amx = _amx_must_be_disabled()
    options = _cmake_options(disable_amx)
    build_dir = cache_dir / "llama.cpp-build"
    bin_dir = build_dir / "bin"
    stamp_file = build_dir / "hoshikage-benchmark-build.json"
    stamp = {
        "llama_cpp_python": version,
        "options": options,
        "fingerprint": hashlib.sha256(json.dumps(options).encode()).hexdigest()[:16],
    }
    binaries = [bin_dir / name for name in TARGETS]
    if all(path.exists() for path in binaries) and stamp_file.exists():
        try:
            previous = json.loads(stamp_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == stamp:  # a finished build of these sources with these options
            return LlamaBinaries(binaries[0], binaries[1], version, disable_amx, 0.0)

    source = _sources(version, cache_dir)
    if shutil.which("cmake") is None:
        raise RuntimeError("building llama.cpp needs cmake (and a C++17 compiler)")
    started = time.perf_counter()
    if stamp_file.exists():
        stamp_file.unlink()
    cache_file = build_dir / "CMakeCache.txt"
    configured = build_dir / "hoshikage-benchmark-configured.json"
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file = build_dir / "build.log"
    if (
        not cache_file.exists()
        or not configured.exists()
        or (json.loads(configured.read_text(encoding="utf-8")) != stamp)
    ):
        generator = ["-G", "Ninja"] if shutil.which("ninja") and not cache_file.exists() else []
        log.info(
            "configuring llama.cpp (llama-cpp-python %s)%s",
            version,
            ", AMX off: it crashes on this machine" if disable_amx else "",
        )
        command = ["cmake", "-S", str(source), "-B", str(build_dir), *generator, *options]
        _run_logged(command, log_file, "configuring llama.cpp")
        configured.write_text(json.dumps(stamp), encoding="utf-8")
    jobs = jobs or os.cpu_count() or 1
    log.info(
        "building %s with %d jobs (first time: several minutes; log: %s)",
        " and ".join(TARGETS),
        jobs,
        log_file,
    )
    command = ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS]
    _run_logged(command, log_file, "building llama.cpp")
    missing = [str(path) for path in binaries if not path.exists()]
    if missing:
        raise RuntimeError(f"the llama.cpp build produced no {', '.join(missing)}")
    stamp_file.write_text(json.dumps(stamp), encoding="utf-8")
    build_s = time.perf_counter() - started
    log.info("llama.cpp tools ready in %.0f s", build_s)
    return LlamaBinaries(binaries[0], binaries[1], version, disable_amx, build_s)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    binaries = build_llama_tools()
    print(f"llama-server: {binaries.server}\nllama-bench:  {binaries.bench}")


if __name__ == "__main__":
    main()
