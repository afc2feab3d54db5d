"""The power-law fit: parameter recovery, uncertainties, R^2, held-out extrapolation, shared exponents, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agl_trl.scaling.fit import (
    ScalingFitError,
    amplitude_ratio,
    fit_power_law,
    fit_shared_exponents,
)
from agl_trl.scaling.holdout import holdout_extrapolation

L0, A, BETA = 0.02, 3e-3, 0.35
BUDGETS = np.geomspace(1e5, 1e8, 10)


def law(d, l0=L0, a=A, beta=BETA):
    return l0 + a * np.asarray(d, dtype=float) ** beta


def noisy(d, seed, rel=0.02):
    rng = np.random.default_rng(seed)
    return law(d) * np.exp(rng.normal(0.0, rel, np.size(d)))


def test_perfect_power_law_is_recovered_exactly_with_r2_one():
    fit = fit_power_law(BUDGETS, law(BUDGETS))
    assert fit.beta == pytest.approx(BETA, rel=1e-6)
    assert abs(fit.A / A - 1) < 1e-5
    assert abs(fit.L0 / L0 - 1) < 1e-5
    assert fit.r2 == pytest.approx(1.0, abs=1e-10) and fit.r2_log == pytest.approx(1.0, abs=1e-10)
    assert fit.stderr["beta"] < 1e-8 and fit.n_points == 10 and fit.gamma is None
    np.testing.assert_allclose(fit.predict([3e8]), law([3e8]), rtol=1e-6)


def test_r2_is_low_when_the_points_follow_no_power_law():
    y = 0.5 + np.random.default_rng(0).normal(0, 0.05, BUDGETS.size)
    fit = fit_power_law(BUDGETS, y, space="linear")
    assert fit.r2 < 0.6
    assert fit.r2 == pytest.approx(1 - np.sum((y - fit.predict(BUDGETS)) ** 2) / np.sum((y - y.mean()) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_log_space_fit_recovers_parameters_within_tolerance(seed):
    fit = fit_power_law(BUDGETS, noisy(BUDGETS, seed))
    assert abs(fit.beta - BETA) < 0.03  # 2% multiplicative noise, 10 budgets over 3 decades
    assert abs(fit.beta - BETA) < 4 * fit.stderr["beta"]
    assert abs(fit.L0 - L0) < 0.035
    np.testing.assert_allclose(fit.predict(BUDGETS), law(BUDGETS), rtol=0.03)
    assert fit.r2 > 0.99 and fit.space == "log" and not fit.warnings


def test_noisy_linear_space_fit_recovers_parameters():
    rng = np.random.default_rng(3)
    fit = fit_power_law(BUDGETS, law(BUDGETS) + rng.normal(0, 0.01, BUDGETS.size), space="linear")
    assert abs(fit.beta - BETA) < 0.03 and abs(fit.L0 - L0) < 0.04
    np.testing.assert_allclose(fit.predict(BUDGETS[3:]), law(BUDGETS[3:]), rtol=0.05)


def test_two_dimensional_fit_recovers_rank_exponent():
    d, n = (x.ravel() for x in np.meshgrid(np.geomspace(1e5, 1e8, 6), [4, 8, 16, 32]))
    truth = 0.01 + 2e-3 * d**0.3 * n**0.4
    fit = fit_power_law(d, truth * np.exp(np.random.default_rng(0).normal(0, 0.02, d.size)), n)
    assert fit.gamma is not None
    assert abs(fit.beta - 0.3) < 0.02 and abs(fit.gamma - 0.4) < 0.03 and abs(fit.A / 2e-3 - 1) < 0.1
    assert set(fit.stderr) == {"L0", "A", "beta", "gamma"} and all(np.isfinite(list(fit.stderr.values())))
    with pytest.raises(ValueError, match="rank"):
        fit.predict(1e6)


def test_uncertainty_shrinks_with_more_points():
    def stderr_and_width(n, seed):
        d = np.geomspace(1e5, 1e8, n)
        fit = fit_power_law(d, noisy(d, seed), bootstrap=60, seed=seed)
        lo, hi = fit.ci95["beta"]
        assert lo <= fit.beta <= hi
        return fit.stderr["beta"], hi - lo

    few = np.mean([stderr_and_width(6, s) for s in range(4)], axis=0)
    many = np.mean([stderr_and_width(48, s) for s in range(4)], axis=0)
    assert many[0] < 0.6 * few[0]  # Jacobian standard error (~ 1/sqrt(n))
    assert many[1] < 0.6 * few[1]  # bootstrap interval width


def test_held_out_extrapolation_reports_the_error_at_the_largest_budget():
    y = law(BUDGETS)
    exact = holdout_extrapolation(BUDGETS, y)
    assert exact.budget == BUDGETS.max() and exact.n_fit_points == 9
    assert exact.abs_error < 1e-9 and exact.rel_error < 1e-9
    y_off = y.copy()
    y_off[-1] += 0.1  # the fit on the other 9 points is exact, so it predicts the unshifted value
    off = holdout_extrapolation(BUDGETS, y_off)
    assert off.predicted == pytest.approx(y[-1], rel=1e-6)
    assert off.observed == pytest.approx(y_off[-1])
    assert off.abs_error == pytest.approx(0.1, rel=1e-5)
    assert off.rel_error == pytest.approx(0.1 / y_off[-1], rel=1e-5)
    with pytest.raises(ScalingFitError, match="4 distinct budgets"):
        holdout_extrapolation(BUDGETS[:3], y[:3])


def test_held_out_extrapolation_with_ranks_holds_out_every_rank_at_the_largest_budget():
    d, n = (x.ravel() for x in np.meshgrid(np.geomspace(1e5, 1e8, 5), [4, 16]))
    y = 0.01 + 2e-3 * d**0.3 * n**0.4
    y_off = np.where(d == d.max(), y * 1.2, y)
    ext = holdout_extrapolation(d, y_off, n)
    assert ext.n_fit_points == 8
    assert ext.rel_error == pytest.approx(0.2 / 1.2, rel=1e-4)


def test_shared_beta_fit_gives_the_amplitude_ratio():
    agl = 0.02 + 1.2e-3 * BUDGETS**BETA
    data = {"lora": (BUDGETS, noisy(BUDGETS, 5), None, None), "agl": (BUDGETS, agl, None, None)}
    shared = fit_shared_exponents(data)
    assert shared.fits["lora"].beta == shared.fits["agl"].beta
    ratio, err = shared.amplitude_ratio("agl", "lora")
    assert ratio == pytest.approx(0.4, rel=0.1) and 0 < err < 0.1
    separate = amplitude_ratio(fit_power_law(BUDGETS, agl), fit_power_law(BUDGETS, law(BUDGETS)))
    assert separate[0] == pytest.approx(0.4, rel=1e-4)


def test_fit_errors_name_the_problem():
    with pytest.raises(ScalingFitError, match="at least 3"):
        fit_power_law([1e5, 1e6, 1e6], [0.1, 0.2, 0.3])
    with pytest.raises(ScalingFitError, match="space='linear'"):
        fit_power_law(BUDGETS, law(BUDGETS) - 0.2)
    with pytest.raises(ScalingFitError, match="NaN"):
        fit_power_law(BUDGETS, np.where(BUDGETS > 1e7, math.nan, law(BUDGETS)))
    with pytest.raises(ScalingFitError, match="budgets must be > 0"):
        fit_power_law(np.r_[0.0, BUDGETS[1:]], law(BUDGETS))
    with pytest.raises(ScalingFitError, match="beta_range"):
        fit_power_law(BUDGETS, law(BUDGETS), beta_range=(1.0, 0.5))
    # negative losses are fine in linear space
    assert abs(fit_power_law(BUDGETS, law(BUDGETS) - 0.2, space="linear").L0 - (L0 - 0.2)) < 1e-6


def test_warns_when_beta_leaves_the_grid_range():
    fit = fit_power_law(BUDGETS, 0.02 + 1e-6 * BUDGETS**0.9, beta_range=(0.05, 0.5))
    assert any("beta" in w and "widen" in w for w in fit.warnings)
    assert not fit_power_law(BUDGETS, law(BUDGETS)).warnings


def test_standard_errors_match_the_spread_over_noise_realisations():
    fits = [fit_power_law(BUDGETS, noisy(BUDGETS, seed)) for seed in range(40)]
    spread = np.std([f.beta for f in fits], ddof=1)
    typical = np.median([f.stderr["beta"] for f in fits])
    assert 0.5 < typical / spread < 2.0
    boot = fit_power_law(BUDGETS, noisy(BUDGETS, 0), bootstrap=100)
    lo, hi = boot.ci95["beta"]
    assert 0.4 < (hi - lo) / (2 * 1.96 * spread) < 2.5
