"""``python -m balloonlab`` is the ``balloonlab`` command."""

from .cli import main

raise SystemExit(main())
