"""`python -m distribute` is the `distribute` command."""

from .cli import main

raise SystemExit(main())
