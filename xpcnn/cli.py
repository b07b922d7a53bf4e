"""The ``xpcnn`` command: ``demo``, ``train``, ``evaluate``, ``bench``, ``predict``, ``info``.

Each subcommand lives in ``xpcnn/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
it runs, so ``xpcnn info`` stays fast and needs no optional dependency.

A user mistake (missing file, bad option, unknown or unusable backend, a
missing optional dependency) prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .backend import BackendUnavailableError

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("xpcnn.commands.demo", "run the tutorial's three-layer CNN on an image and draw every feature map"),
    "train": ("xpcnn.commands.train", "train a CNN on digits or MNIST and save it"),
    "evaluate": ("xpcnn.commands.evaluate", "evaluate a saved model: accuracy and confusion matrix"),
    "bench": ("xpcnn.commands.bench", "time each conv algorithm per shape (and PyTorch, if installed)"),
    "predict": ("xpcnn.commands.predict", "apply a saved model to a large .npy or zarr image array on Dask"),
    "info": ("xpcnn.commands.info", "versions and the backends usable here"),
}


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit code 2."""


class _Finished(Exception):
    """``--help`` or ``--version`` printed what was asked: return the status from main."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message and exits 2; keep it to one line
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):  # after --help / --version: main returns, no sys.exit
        if message:
            print(message, end="", file=sys.stderr)
        raise _Finished(status)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="xpcnn", description="CNNs on NumPy and CuPy.")
    parser.add_argument("--version", action="version", version=f"xpcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(modname).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xpcnn`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except _Finished as done:
        return done.status
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        sys.stderr.close()
        return 0
    except (UsageError, BackendUnavailableError, ValueError, OSError, ModuleNotFoundError) as exc:
        message = str(exc) if isinstance(exc, UsageError) else f"xpcnn: error: {exc}"
        print(" ".join(message.split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xpcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
