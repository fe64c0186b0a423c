"""``python -m echo``: the same as the ``echo-copier`` command."""

from echo.cli import main

raise SystemExit(main())
