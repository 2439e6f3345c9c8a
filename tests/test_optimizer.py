"""Learning-rate schedule, weight-decay mask and clipping of the optimizer."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_config
from vlsa_jax import optimizer


def _optim(schedule):
    config = load_config()
    config.optim.lr, config.optim.warmup_steps, config.optim.schedule = 1e-3, 10, schedule
    return config


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays(schedule):
    lr = optimizer.learning_rate_schedule(_optim(schedule).optim, num_steps=110)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    expected_mid = {"cosine": 1e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)), "linear": 5e-4,
                    "constant": 1e-3}[schedule]
    np.testing.assert_allclose(lr(60), expected_mid, rtol=1e-5)
    np.testing.assert_allclose(lr(110), 1e-3 if schedule == "constant" else 0.0, atol=1e-9)


def test_weight_decay_applies_to_matrices_only():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "norm": {"scale": jnp.ones(2)}, "words": {"embedding": jnp.ones((3, 2))},
              "positions": {"tables": {0: jnp.ones((4, 2))}}}
    assert optimizer.decay_mask(params) == {
        "dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
        "words": {"embedding": True}, "positions": {"tables": {0: False}}}


def test_gradients_are_clipped_to_the_global_norm():
    config = _optim("constant")
    config.optim.warmup_steps, config.optim.weight_decay, config.optim.grad_clip = 0, 0.0, 1.0
    params = {"kernel": jnp.zeros(4)}
    tx = optimizer.make_optimizer(config)
    state = tx.init(params)
    # Adam normalises the update, so compare the first moment: it holds the clipped gradient.
    _, state = tx.update({"kernel": jnp.full(4, 10.0)}, state, params)
    mu = state[1][0].mu["kernel"]
    np.testing.assert_allclose(np.linalg.norm(mu / (1 - config.optim.b1)), 1.0, rtol=1e-5)
