#!/usr/bin/env python3
"""Fits the rational erf of model/amx_gemm.cc's GELU epilogue and checks it.

erf(x) ~ x P(x^2) / Q(x^2) on [0, 4] (odd, so [-4, 4]), P of degree 6 and Q
of degree 4 in x^2, Q(0) = 1: a linearized least-squares fit, iterated
(Sanathanan-Koerner) with Lawson's reweighting towards the minimax error.
Prints the coefficients as float literals, the fit's error in double and the
error of the float32 evaluation (Horner, clamped input) over [-6, 6].
Needs numpy. Usage: /usr/bin/python3 scripts/fit_erf.py
"""
import math

import numpy as np

LIMIT, P_DEGREE, Q_DEGREE = 4.0, 6, 4


def fit():
    x = np.unique(np.concatenate([
        np.linspace(0, LIMIT, 20000),
        LIMIT / 2 + LIMIT / 2 * np.cos(np.linspace(0, np.pi, 4000))]))
    f = np.array([math.erf(v) for v in x])
    t = x * x
    weights = np.ones_like(x)
    q_values = np.ones_like(x)
    for _ in range(60):
        # x P(t) - f (Q(t) - 1) = f, unknowns p_0..p_dp, q_1..q_dq.
        columns = [x * t**i for i in range(P_DEGREE + 1)]
        columns += [-f * t**i for i in range(1, Q_DEGREE + 1)]
        a = np.stack(columns, 1)
        row_weights = weights / np.abs(q_values)
        solution = np.linalg.lstsq(a * row_weights[:, None], f * row_weights, rcond=None)[0]
        p = solution[:P_DEGREE + 1]
        q = np.concatenate([[1.0], solution[P_DEGREE + 1:]])
        q_values = np.polyval(q[::-1], t)
        error = x * np.polyval(p[::-1], t) / q_values - f
        weights = weights * (np.abs(error) / np.abs(error).max())**0.3 + 1e-12
        weights /= weights.max()
    return p, q, np.abs(error).max()


def float32_error(p, q):
    x = np.linspace(-6, 6, 2000001).astype(np.float32)
    c = np.clip(x, np.float32(-LIMIT), np.float32(LIMIT))
    t = c * c
    pv = np.full_like(t, np.float32(p[-1]))
    for coefficient in p[-2::-1]:
        pv = pv * t + np.float32(coefficient)
    qv = np.full_like(t, np.float32(q[-1]))
    for coefficient in q[-2::-1]:
        qv = qv * t + np.float32(coefficient)
    y = c * pv / qv
    return np.abs(y - np.array([math.erf(float(v)) for v in x])).max()


def main():
    p, q, error = fit()
    p32 = [float(np.float32(v)) for v in p]
    q32 = [float(np.float32(v)) for v in q]
    print("P (x^0 first):", ", ".join("%.9gf" % v for v in p32))
    print("Q (x^0 first):", ", ".join("%.9gf" % v for v in q32))
    print("max |error| in double: %.3g" % error)
    print("max |error| in float32 (no fma): %.3g" % float32_error(p32, q32))


if __name__ == "__main__":
    main()
