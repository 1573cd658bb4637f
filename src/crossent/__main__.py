"""``python -m crossent``: the same as the ``crossent`` command."""

from crossent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
