"""A strict reader of the Prometheus text exposition format, for the metrics tests."""

from __future__ import annotations

import math
import re

__all__ = ["parse_exposition", "value", "values"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"

_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"

_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'

_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})"
    rf"(?:\{{(?P<labels>(?:{_LABEL_NAME}={_LABEL_VALUE})(?:,{_LABEL_NAME}={_LABEL_VALUE})*)?\}})?"
    r" (?P<value>\S+)$"
)

_PAIR = re.compile(rf"({_LABEL_NAME})=({_LABEL_VALUE})")

def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), quoted[1:-1])

def parse_exposition(text: str) -> dict[str, dict]:
    """Parse and validate: every family has HELP and TYPE before its samples, names and
    label names are valid, label values are properly escaped, values are numbers."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    families: dict[str, dict] = {}
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in families, line
            assert "\n" not in help_
            families[name] = {"help": help_, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name in families and families[name]["type"] is None, line
            assert not families[name]["samples"], "TYPE comes before the samples"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            families[name]["type"] = kind
        else:
            assert not line.startswith("#"), line
            match = _SAMPLE.match(line)
            assert match, f"not a valid sample line: {line!r}"
            name = match["name"]
            assert name in families and families[name]["type"], f"{name} has no HELP/TYPE"
            value = match["value"]
            assert value in ("NaN", "+Inf", "-Inf") or math.isfinite(float(value)), line
            labels = {k: _unescape(v) for k, v in _PAIR.findall(match["labels"] or "")}
            families[name]["samples"].append((labels, float(value)))
    return families

def values(families: dict, name: str, label: str) -> dict[str, float]:
    return {labels[label]: v for labels, v in families[name]["samples"]}

def value(families: dict, name: str) -> float:
    ((_, v),) = families[name]["samples"]
    return v
