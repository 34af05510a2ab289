"""``python -m report``: the same as the ``nas-report`` console script."""

from report.cli import main

if __name__ == "__main__":
    main()
