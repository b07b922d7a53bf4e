"""``xpcnn info``: versions, and which backends are usable here and why not."""

from __future__ import annotations

import platform

import numpy

from .. import __version__, backend, config


def add_arguments(parser) -> None:
    """``xpcnn info`` takes no options."""


def run(args) -> int:
    print(f"xpcnn {__version__}  python {platform.python_version()}  numpy {numpy.__version__}")
    print(f"default backend: {backend.get_default()}")
    print(f"usable backends: {', '.join(backend.available())}")
    if "cupy" not in backend.available():
        try:
            backend.module("cupy")
        except backend.BackendUnavailableError as exc:
            print(f"cupy: {exc}")
    print(f"workspace_bytes: {config.workspace_bytes}")
    return 0
