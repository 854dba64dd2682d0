"""The training loop reads its losses from the device every --print-freq batches, in one copy."""
import numpy as np
import pytest

import lsnet_ref as L
from train.engine import LossLog, NonFiniteLoss


def test_losses_are_read_every_few_batches_in_order():
    values = []
    log = LossLog(values, every=3, epoch=0)
    for batch in range(7):
        log.add(L.Tensor(np.float32(batch / 2)), batch)
        assert values == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5][:3 * ((batch + 1) // 3)]
    log.flush()
    assert values == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    log.flush()
    assert len(values) == 7


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_loss_is_named_with_its_batch_when_read(bad):
    values = []
    log = LossLog(values, every=4, epoch=2)
    log.add(L.Tensor(np.float64(1.0)), 10)
    log.add(L.Tensor(np.float64(bad)), 11)
    with pytest.raises(NonFiniteLoss, match=f"loss is {bad} at epoch 2, batch 11"):
        log.flush()
    assert values == [1.0]
