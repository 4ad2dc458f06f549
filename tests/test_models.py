"""Learning-rate schedules: the rate each step of a phase gets."""

import transferlab.runtime  # noqa: F401 (quiet TensorFlow start)

import numpy as np
import pytest

from transferlab import models
from transferlab.errors import UserError


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_constant_is_the_rate_itself():
    assert models.learning_rate_schedule("constant", 1e-3, steps_per_epoch=10, epochs=5) == 1e-3


def test_cosine_decays_from_the_rate_to_zero_over_the_phase():
    schedule = models.learning_rate_schedule("cosine", 1e-3, steps_per_epoch=10, epochs=5)
    assert rates(schedule, [0, 25, 50]) == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)


def test_warmup_cosine_climbs_over_the_first_epoch_then_decays_to_zero():
    schedule = models.learning_rate_schedule("warmup_cosine", 1e-3, steps_per_epoch=10, epochs=5)
    assert rates(schedule, [0, 5, 10, 30, 50]) == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0], abs=1e-9)


def test_an_unknown_schedule_is_one_line():
    with pytest.raises(UserError, match="--schedule=linear: expected one of constant, cosine, warmup_cosine"):
        models.learning_rate_schedule("linear", 1e-3, 10, 5)
