"""``python -m xpcnn``: the same as the ``xpcnn`` command."""

from .cli import main

raise SystemExit(main())
