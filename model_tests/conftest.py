"""The model checks need .venv-model (torch, sentence-transformers): run them with
``make test-model``. They are outside ``tests/`` so ``make test`` never collects them."""

from __future__ import annotations

import pytest

# Filled by the reference check, printed at the end of the run for the record.
SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
