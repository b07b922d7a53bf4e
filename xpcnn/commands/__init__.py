"""One module per ``xpcnn`` subcommand; see :mod:`xpcnn.cli`."""
