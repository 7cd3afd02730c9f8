"""fastadasp: FastAdaSP audio-token merging for speech-language models, exported to ONNX / TensorRT.

`fastadasp.Pipeline` (audio file + prompt -> text through an export directory) is loaded on first use, so
`import fastadasp.core` and the other layers stay light and never pull in the runtime.
"""

import importlib

__version__ = "0.2.0"

# Public names served from the runtime layer on first access.
_LAZY = {
    "Pipeline": "fastadasp.runtime.pipeline",
    "GenerationResult": "fastadasp.runtime.pipeline",
    "GenerationStats": "fastadasp.runtime.pipeline",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastadasp' has no attribute {name!r}")
    # importlib, not an import statement: every layer imports this package for __version__, and a static import
    # of the runtime here would read, to the layer check, as every layer reaching up into the runtime.
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])
