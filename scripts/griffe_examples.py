"""A griffe extension for `make docs`: abathur's ``Example:`` sections are examples.

abathur's docstrings (Google style) head their doctests ``Example:``, which
griffe reads as a plain admonition: its ``>>>`` lines then render as quoted
text, not as code. This renames the heading to ``Examples:`` (the section
griffe knows) before a docstring is parsed, so every example renders as a
Python console block. The docstrings themselves stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
