"""The impossibility tables (benchmarks/limits.py) compute what they say."""

from __future__ import annotations

import math

import pytest

from benchmarks.limits import (
    l1_min_intervals,
    l1_min_intervals_promotion,
    l2_canary_only_power,
    l2_point_mass_weight,
)


def test_l1_needs_more_intervals_for_smaller_effects_and_levels() -> None:
    assert l1_min_intervals(0.01, 5.0, 1.25, 0.005) == pytest.approx(170, abs=1)
    assert l1_min_intervals(0.01, 2.0, 1.25, 0.005) > l1_min_intervals(0.01, 5.0, 1.25, 0.005)
    assert l1_min_intervals(0.01, 1.25, 1.25, 0.005) == math.inf  # the boundary: never
    assert l1_min_intervals_promotion(0.01, 1.0, 1.25, 0.05) == pytest.approx(1200, rel=0.01)


@pytest.mark.parametrize("kappa", [0.3, 0.7, 1.5])
def test_l2_two_point_law_has_mean_one_and_the_cv(kappa: float) -> None:
    ratio = 4.0
    w = l2_point_mass_weight(ratio, kappa)
    rest = (1 - ratio * w) / (1 - w)
    assert rest >= 0
    assert w * ratio + (1 - w) * rest == pytest.approx(1.0)
    assert math.sqrt(w * ratio**2 + (1 - w) * rest**2 - 1) == pytest.approx(kappa, rel=1e-6)


def test_l2_neyman_pearson_power_falls_with_unseen_bursts() -> None:
    quiet = l2_canary_only_power(300, 0.01, 1.25, 5.0, 0.5, 0.005, 1, sims=20_000)
    wild = l2_canary_only_power(300, 0.01, 1.25, 5.0, 1.5, 0.005, 1, sims=20_000)
    assert wild < 0.1 < 0.5 < quiet
