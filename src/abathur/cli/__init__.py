"""The ``abathur`` command (being written)."""


def main() -> None:
    """Entry point."""
