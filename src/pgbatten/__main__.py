"""``python -m pgbatten``: the same command as the ``pgbatten`` script (used by scheduled jobs when pgbatten
runs from a checkout or a virtual environment without its script on PATH)."""

from pgbatten.cli import main

if __name__ == "__main__":
    main(prog_name="pgbatten")
