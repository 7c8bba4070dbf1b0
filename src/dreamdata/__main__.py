"""``python -m dreamdata`` is the same as the ``dreamdata`` console script."""

from dreamdata.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
