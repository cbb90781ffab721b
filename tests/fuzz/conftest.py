"""Hypothesis profiles of the fuzzer, chosen with ``HYPOTHESIS_PROFILE``.

* ``ci`` (the default, what ``make test`` runs): a few hundred examples,
  measured to keep the whole of tests/fuzz under 60 s on a 2-core machine.
* ``long`` (``make fuzz``): about ten minutes.
* ``dev``: a handful of examples, to check the fuzzer itself runs.

The profiles are registered here but not loaded globally: only the fuzz
tests take them (``FUZZ`` in tests/fuzz/strategies.py), so the other
property tests keep their own settings whatever the variable says.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_QUIET = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]

# Example counts are per test function; see tests/fuzz/README.md for the
# measurements behind them.
settings.register_profile(
    "ci", max_examples=2500, deadline=None, suppress_health_check=_QUIET, print_blob=True
)
settings.register_profile(
    "long", max_examples=28000, deadline=None, suppress_health_check=_QUIET, print_blob=True
)
settings.register_profile(
    "dev", max_examples=10, deadline=None, suppress_health_check=_QUIET, print_blob=True
)
