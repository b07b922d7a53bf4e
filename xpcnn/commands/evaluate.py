"""``xpcnn evaluate``: being written."""


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from ..cli import UsageError

    raise UsageError("xpcnn evaluate: not available yet")
