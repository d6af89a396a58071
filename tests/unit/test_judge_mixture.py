"""Closed-form checks of the normal-mixture boundary math against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from lossgate.core.mixture import (
    cs_half_width,
    cs_half_width_mixture,
    information_to_cross,
    log_lambda_mixture,
    log_lambda_plus,
    rho_from_planned_information,
)

SCALES = (1.0, 0.1, 0.01)


def _mixture_by_quadrature(score: float, info: float, rho: float) -> float:
    """Lambda_plus as its definition: the likelihood ratio exp(eta S - eta^2 I / 2) averaged over
    eta ~ half-normal with precision rho (density 2 N(eta; 0, 1/rho) on eta > 0)."""
    sd = 1.0 / math.sqrt(rho)

    def integrand(eta: float) -> float:
        return math.exp(eta * score - eta * eta * info / 2.0) * 2.0 * stats.norm.pdf(eta, scale=sd)

    value, _ = integrate.quad(integrand, 0.0, math.inf, epsabs=0.0, epsrel=1e-11, limit=200)
    return float(value)


@pytest.mark.parametrize(
    ("score", "info", "rho"),
    [
        (0.0, 0.0, 1.0),
        (3.0, 10.0, 1.0),
        (-4.0, 10.0, 2.5),
        (25.0, 100.0, 10.0),
        (-20.0, 50.0, 5.0),
        (1.0, 0.5, 0.1),
    ],
)
def test_log_lambda_matches_the_mixture_integral(score: float, info: float, rho: float) -> None:
    # Given a score, information and mixture precision
    # When the closed form is evaluated
    got = float(log_lambda_plus(score, info, rho))
    # Then it equals the log of the mixture integral computed by quadrature
    assert got == pytest.approx(math.log(_mixture_by_quadrature(score, info, rho)), abs=1e-8)


def test_log_lambda_is_stable_far_in_both_tails() -> None:
    # Given scores so large that exp(S^2/2(rho+I)) overflows and Phi(x) underflows in double precision
    scores = np.array([-1e12, -1e6, -40.0, -5.0, 0.0, 5.0, 40.0, 1e6, 1e12])
    info, rho = 1e4, 1e3
    # When evaluated
    got = log_lambda_plus(scores, info, rho)
    # Then every value is finite and the function is increasing in the score
    assert np.all(np.isfinite(got))
    assert np.all(np.diff(got) > 0)
    # And on the negative side it agrees with the independent form x^2/2 + log_ndtr(x) where that form
    # is still accurate (moderate x), and with the Mills-ratio asymptote far out
    x = scores / math.sqrt(info + rho)
    prefix = math.log(2.0) + 0.5 * math.log(rho / (info + rho))
    moderate = (x < 0) & (x > -30)
    direct = prefix + 0.5 * x[moderate] ** 2 + special.log_ndtr(x[moderate])
    np.testing.assert_allclose(got[moderate], direct, rtol=1e-9, atol=1e-9)
    far = x < -1e3
    asymptote = prefix - np.log(-x[far]) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(got[far], asymptote, rtol=0, atol=1e-6)


def test_lambda_is_one_with_no_information() -> None:
    # Given no information (S = 0, I = 0)
    # Then the mixture martingale starts at 1 whatever rho
    np.testing.assert_allclose(log_lambda_plus(0.0, 0.0, [1e-6, 1.0, 1e6]), 0.0, atol=1e-12)


def test_rho_formula_is_near_the_optimum_of_the_one_sided_boundary() -> None:
    # Given alpha = 0.01 and planned information I* = 1 (rho scales linearly with I*)
    alpha, planned = 0.01, 1.0

    def boundary(rho: float) -> float:  # smallest theta_hat - theta0 that rejects at I*
        f = lambda s: float(log_lambda_plus(s, planned, rho)) - math.log(1 / alpha)  # noqa: E731
        return optimize.brentq(f, 0.0, 100.0) / planned

    # When rho comes from the formula, and separately from a numerical minimisation of the boundary
    rho = rho_from_planned_information(planned, alpha)
    best = optimize.minimize_scalar(lambda lr: boundary(math.exp(lr)), bounds=(-8, 3), method="bounded")
    # Then the formula gives about I*/10 (STATISTICS.md), within 5% of the optimum, and the boundary it
    # gives is within 0.01% of the tightest possible at I*
    assert planned / rho == pytest.approx(10.0, rel=0.01)
    assert rho == pytest.approx(math.exp(best.x), rel=0.05)
    assert boundary(rho) == pytest.approx(best.fun, rel=1e-4)
    # And it is linear in I*
    assert rho_from_planned_information(7.0, alpha) == pytest.approx(7.0 * rho)


@pytest.mark.parametrize(("info", "rho", "alpha"), [(10.0, 1.0, 0.05), (1e4, 1e3, 0.01), (0.5, 2.0, 0.1)])
def test_cs_half_width_solves_the_two_sided_mixture_equation(info: float, rho: float, alpha: float) -> None:
    # Given the two-sided normal mixture sqrt(rho/(rho+I)) exp(S^2 / (2(rho+I))) = 1/alpha
    def two_sided(s: float) -> float:
        return 0.5 * math.log(rho / (rho + info)) + s * s / (2 * (rho + info)) - math.log(1 / alpha)

    # When the half-width is computed in closed form
    half = float(cs_half_width(info, rho, alpha))
    # Then it equals the root (in theta units, S = I * (theta_hat - theta)) found numerically
    root = optimize.brentq(two_sided, 0.0, 1e6)
    assert half == pytest.approx(root / info, rel=1e-10)


def test_cs_half_width_is_infinite_without_information() -> None:
    assert math.isinf(float(cs_half_width(0.0, 1.0, 0.05)))


@pytest.mark.parametrize(("excess", "info", "rho", "alpha"), [(0.01, 0.0, 1e4, 0.01), (0.5, 3.0, 1.0, 0.05)])
def test_information_to_cross_lands_on_the_boundary(
    excess: float, info: float, rho: float, alpha: float
) -> None:
    # Given an estimate `excess` beyond the null value that has not crossed yet
    assert float(log_lambda_plus(info * excess, info, rho)) < math.log(1 / alpha)
    # When the information at which it would cross is solved for
    target = information_to_cross(excess, info, rho, alpha)
    # Then Lambda is exactly 1/alpha there (checked with an independent root finder)
    f = lambda i: float(log_lambda_plus(i * excess, i, rho)) - math.log(1 / alpha)  # noqa: E731
    assert f(target) == pytest.approx(0.0, abs=1e-6)
    assert target == pytest.approx(optimize.brentq(f, max(info, 1e-12), target * 2), rel=1e-6)


def test_information_to_cross_is_infinite_when_the_estimate_sits_on_the_null() -> None:
    assert math.isinf(information_to_cross(0.0, 10.0, 1.0, 0.01))
    assert math.isinf(information_to_cross(-1.0, 10.0, 1.0, 0.01))


@pytest.mark.parametrize(("score", "info", "rho"), [(3.0, 10.0, 1.0), (-4.0, 10.0, 2.5), (25.0, 100.0, 10.0)])
def test_rho_mixture_is_the_average_of_the_components_integrals(
    score: float, info: float, rho: float
) -> None:
    # Given the mixture over rho, rho/10, rho/100 with equal weights
    got = float(log_lambda_mixture(score, info, rho, SCALES))
    # Then it is the log of the average of the three mixture integrals (a scale mixture of half-normals)
    by_quadrature = sum(_mixture_by_quadrature(score, info, rho * c) for c in SCALES) / len(SCALES)
    assert got == pytest.approx(math.log(by_quadrature), abs=1e-8)
    # And a single scale is exactly the plain mixture
    assert float(log_lambda_mixture(score, info, rho, (1.0,))) == float(log_lambda_plus(score, info, rho))


def test_rho_mixture_is_bounded_by_its_components() -> None:
    scores = np.linspace(-50, 200, 26)
    parts = np.stack([log_lambda_plus(scores, 500.0, 30.0 * c) for c in SCALES])
    mix = log_lambda_mixture(scores, 500.0, 30.0, SCALES)
    assert np.all(mix <= parts.max(axis=0) + 1e-12)
    assert np.all(mix >= parts.max(axis=0) - math.log(len(SCALES)) - 1e-12)


@pytest.mark.parametrize(("info", "rho", "alpha"), [(10.0, 1.0, 0.05), (1e4, 1e3, 0.01), (0.5, 2.0, 0.1)])
def test_mixture_cs_half_width_solves_its_equation(info: float, rho: float, alpha: float) -> None:
    # Given the two-sided version of the rho mixture
    def two_sided(h: float) -> float:
        s = info * h
        terms = [
            math.sqrt(rho * c / (rho * c + info)) * math.exp(s * s / (2 * (rho * c + info))) for c in SCALES
        ]
        return math.log(sum(terms) / len(terms)) - math.log(1 / alpha)

    # Then the half-width is its root, and with one scale it is the closed form
    half = cs_half_width_mixture(info, rho, SCALES, alpha)
    assert half == pytest.approx(optimize.brentq(two_sided, 0.0, 2 * half), rel=1e-9)
    assert cs_half_width_mixture(info, rho, (1.0,), alpha) == float(cs_half_width(info, rho, alpha))
    assert math.isinf(cs_half_width_mixture(0.0, rho, SCALES, alpha))


def test_information_to_cross_with_the_rho_mixture() -> None:
    excess, rho, alpha = 0.02, 4e4, 0.01
    target = information_to_cross(excess, 0.0, rho, alpha, SCALES)
    f = lambda i: float(log_lambda_mixture(i * excess, i, rho, SCALES)) - math.log(1 / alpha)  # noqa: E731
    assert f(target) == pytest.approx(0.0, abs=1e-6)
    # The mixture crosses sooner than the single rho for an effect far larger than rho was planned for
    assert target < information_to_cross(excess, 0.0, rho, alpha)
