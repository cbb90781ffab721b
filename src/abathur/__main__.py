"""``python -m abathur``: the same as the ``abathur`` command."""

from abathur.cli import main

if __name__ == "__main__":
    main(prog_name="abathur")
