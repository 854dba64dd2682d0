"""Shared test settings: Hypothesis profiles.

LSNET_HYPOTHESIS_PROFILE picks one: "ci" (default: few examples, derandomised so that every run of
the suite draws the same cases) or "deep" (many random examples).
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "deep", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("LSNET_HYPOTHESIS_PROFILE", "ci"))
