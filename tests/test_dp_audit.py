"""The canary audit (privkit.dp.audit) can fail: it catches DP-SGD with the noise dropped, passes
the correct implementation, and its lower bound is statistically valid for an exact eps-DP
mechanism."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from privkit.dp.audit import audit_canaries, audit_classifier, epsilon_lower_bound
from privkit.errors import ParameterError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target


def test_perfect_attack_bound_matches_the_binomial_formula():
    inside = np.array([True] * 100 + [False] * 100)
    lb, info = epsilon_lower_bound(inside.astype(float), inside, beta=0.05)
    # all 200 guesses right: p^200 = beta / 3 (3 fractions tried) -> eps = log(p / (1 - p))
    p = (0.05 / 3) ** (1 / 200)
    assert info["correct"] == info["guesses"] == 200
    assert lb == pytest.approx(math.log(p / (1 - p)), rel=1e-6)


def test_bad_inputs_are_typed_errors():
    with pytest.raises(ParameterError):
        epsilon_lower_bound([1.0, float("nan")], [True, False])
    with pytest.raises(ParameterError):
        epsilon_lower_bound([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ParameterError):
        audit_canaries(lambda inc: None, lambda m: np.zeros(3), 4)


@pytest.mark.parametrize("eps", [0.0, 1.0, 3.0])
def test_bound_is_valid_for_an_exact_eps_dp_mechanism(eps):
    """Randomized response on each canary's bit is exactly eps-DP per canary: the audit's lower
    bound must exceed eps in at most about beta of the trials (here 5%; 300 trials)."""
    rng = np.random.default_rng(0)
    p = 1 / (1 + math.exp(-eps))
    over, bounds = 0, []
    for _ in range(300):
        inside = rng.random(200) < 0.5
        truthful = rng.random(200) < p
        reported = np.where(truthful, inside, ~inside)
        scores = reported + 0.01 * rng.random(200)  # ties broken at random
        lb, _ = epsilon_lower_bound(scores, inside, beta=0.05)
        bounds.append(lb)
        over += lb > eps
    assert over / 300 <= 0.08, (over, eps)
    if eps >= 1:
        assert np.median(bounds) > 0.3 * eps  # and the audit is not vacuous


def test_dropping_the_noise_makes_the_audit_fail_and_the_correct_code_pass():
    x, y = _digits()

    def drop_noise(training):
        # the bug: no noise is added, while the accountant still counts the calibrated sigma
        training.optimizer._noise_std = lambda: 0.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buggy = audit_classifier(x, y, 10, target_epsilon=1.0, epochs=60, tamper=drop_noise)
        correct = audit_classifier(x, y, 10, target_epsilon=1.0, epochs=60)
    assert buggy.accountant_epsilon == pytest.approx(1.0, rel=0.02)  # the accountant is fooled
    assert buggy.epsilon_lower_bound > buggy.accountant_epsilon and not buggy.passed
    assert buggy.auc > 0.75
    assert correct.passed and correct.epsilon_lower_bound <= correct.accountant_epsilon
    assert correct.auc < buggy.auc


@pytest.mark.slow
def test_non_private_overfit_model_is_caught():
    x, y = _digits()
    res = audit_classifier(x, y, 10, epochs=150, lr=3e-3)
    assert res.auc > 0.9 and res.epsilon_lower_bound > 1 and not res.passed
