"""The launch budget of a training step (issue 9): LSNet-T with the default recipe, counted by
benchmarks/launch_count.py (the real CLI in the simulator, kernels replaced by counting no-ops)."""
import importlib.util
import pathlib

import pytest

HARNESS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "launch_count.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("launch_count", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lsnet_t_training_step_stays_within_1500_launches_and_copies_nothing_to_the_host(harness):
    launches, host_copies = harness.count("t", 224, steps=3).steady_step()
    assert sum(launches.values()) <= 1500, launches.most_common(10)
    assert host_copies == 0
    # O(1) optimizer work: one AdamW launch per parameter group, one clipping, two EMA (parameters, buffers)
    assert (launches["_adamw_update"], launches["_adaptive_clip_units"], launches["_ema_update"]) == (2, 1, 2)
