"""`python -m app` is the same as the `moshi-desktop` command."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
