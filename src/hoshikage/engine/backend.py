"""llama.cpp process set-up: backend init, log routing, and which GPU backends are built in."""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from hoshikage.engine.types import BackendUnavailableError, EngineError
from hoshikage.logging_setup import TRACE

log = logging.getLogger(__name__)
llama_log = logging.getLogger("hoshikage.llama_cpp")

# ggml_log_level -> Python level. llama.cpp is chatty: its warnings are mostly advice, so
# they land at info; the console default (warn) shows only real errors.
_GGML_LEVELS = {1: TRACE, 2: logging.DEBUG, 3: logging.INFO, 4: logging.ERROR, 5: TRACE}

GPU_BACKENDS = {"cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan"}
_REINSTALL = {
    "cuda": 'CMAKE_ARGS="-DGGML_CUDA=on"',
    "metal": 'CMAKE_ARGS="-DGGML_METAL=on"',
    "vulkan": 'CMAKE_ARGS="-DGGML_VULKAN=on"',
}


def _on_llama_log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    message = (text or b"").decode("utf-8", errors="replace").rstrip()
    if message and message.strip("."):
        llama_log.log(_GGML_LEVELS.get(level, logging.DEBUG), "%s", message)


# A constant C function pointer; it must stay referenced for as long as llama.cpp may call it.
_LOG_CALLBACK = llama_cpp.llama_log_callback(_on_llama_log)


@functools.cache
def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log through `logging`."""
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # cpu, gpu, igpu, accel
    backend: str
    memory_free: int
    memory_total: int


_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@dataclass(frozen=True)
class _Ggml:
    ggml: ctypes.CDLL  # the backend registry (which backends this build has)
    base: ctypes.CDLL  # device and registry accessors


@functools.cache
def _ggml() -> _Ggml:
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    base = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(base, name).restype = ctypes.c_char_p
        getattr(base, name).argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_type.restype = ctypes.c_int
    base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_name.restype = ctypes.c_char_p
    base.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    return _Ggml(ggml=ggml, base=base)


def devices() -> list[Device]:
    """Every compute device this llama.cpp build can use, with its memory."""
    init_backend()
    try:
        libs = _ggml()
    except OSError as exc:  # an unusual build layout (e.g. macOS .dylib): no device list
        log.debug("cannot open ggml for device listing: %s", exc)
        return []
    ggml, base = libs.ggml, libs.base
    found = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        base.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        registry = base.ggml_backend_dev_backend_reg(device)
        found.append(
            Device(
                name=(base.ggml_backend_dev_name(device) or b"").decode(),
                description=(base.ggml_backend_dev_description(device) or b"").decode(),
                kind=_DEVICE_KINDS.get(base.ggml_backend_dev_type(device), "other"),
                backend=(base.ggml_backend_reg_name(registry) or b"").decode() if registry else "",
                memory_free=free.value,
                memory_total=total.value,
            )
        )
    return found


def gpu_devices() -> list[Device]:
    return [device for device in devices() if device.kind in ("gpu", "igpu")]


def system_info() -> str:
    init_backend()
    return bytes(llama_cpp.llama_print_system_info()).decode(errors="replace").strip()


def resolve_offload(backend: str, gpu_layers: int | None) -> tuple[int, str]:
    """Map the backend setting to llama.cpp's n_gpu_layers; name the backend actually used.

    Asking for a GPU backend this build lacks is an error that says how to reinstall.
    """
    gpus = gpu_devices()
    built = {device.backend.lower() for device in gpus}
    if backend == "cpu":
        return 0, "cpu"
    if backend == "auto":
        if not gpus:
            return 0, "cpu"
        return (-1 if gpu_layers is None else gpu_layers), gpus[0].backend.lower()
    if backend == "hybrid":
        if gpu_layers is None or gpu_layers < 0:
            raise EngineError(
                "backend 'hybrid' offloads a given number of layers: set gpu_layers "
                "(e.g. --gpu-layers 20), or use backend 'auto' to offload them all"
            )
        if not gpus:
            raise BackendUnavailableError(
                "backend 'hybrid' needs a GPU backend, and this llama.cpp build has none. "
                + _reinstall_hint("cuda")
            )
        return gpu_layers, f"hybrid:{gpus[0].backend.lower()}"
    if backend in GPU_BACKENDS:
        if backend not in built:
            have = ", ".join(sorted(built)) or "CPU only"
            raise BackendUnavailableError(
                f"backend {backend!r} is not available: this llama.cpp build has {have}. "
                + _reinstall_hint(backend)
            )
        return (-1 if gpu_layers is None else gpu_layers), backend
    raise EngineError(f"unknown backend {backend!r}")


def _reinstall_hint(backend: str) -> str:
    return (
        f"Reinstall llama-cpp-python with that backend compiled in: "
        f"{_REINSTALL[backend]} pip install --force-reinstall --no-cache-dir "
        f"llama-cpp-python=={llama_cpp.__version__}"
    )
