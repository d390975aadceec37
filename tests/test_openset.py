"""Open-set identification thresholds: the FPIR model, the impostor tail, and that a stated FPIR holds on
probes the thresholds were not fitted on (synthetic scores here; LFW in tests/gateway/test_identify_lfw.py)."""

from __future__ import annotations

import numpy as np
import pytest

from facestack.accuracy import openset


def test_fmr_and_fpir_are_inverse_and_scale_with_n() -> None:
    for fpir, n in [(1e-2, 1), (1e-2, 1000), (1e-3, 10**6)]:
        fmr = openset.fmr_for(fpir, n)
        assert openset.fpir_for(fmr, n) == pytest.approx(fpir, rel=1e-9)
    assert openset.fmr_for(1e-2, 1000) == pytest.approx(1e-5, rel=0.01)  # about FPIR / N at small rates


def scores(n: int, seed: int) -> np.ndarray:
    """Impostor cosines shaped like SFace's: centred near 0, sd ~0.09."""
    return np.random.default_rng(seed).normal(0.0, 0.09, n)


def test_tail_is_empirical_where_resolved_and_extrapolates_beyond() -> None:
    fit = openset.ImpostorTail.fit(scores(2_000_000, 1))
    t, calibrated = fit.threshold(1e-4)
    assert calibrated and fit.empirical_fmr(t) <= 1e-4
    # beyond the resolved range (10 / 2M = 5e-6) the exponential tail overstates a Gaussian one: the threshold is
    # higher than the truth needs, so the FMR reached on fresh scores stays below the target
    t_far, calibrated_far = fit.threshold(1e-7)
    assert not calibrated_far and t_far > t
    fresh = scores(20_000_000, 2)
    assert (fresh >= t_far).mean() <= 1e-7
    assert all(r["model_fmr"] > 0 for r in fit.check())


def test_ladder_interpolates_in_log_fmr_and_marks_extrapolation() -> None:
    fit = openset.ImpostorTail.fit(scores(1_000_000, 3))
    ladder = openset.fmr_ladder(fit)
    thresholds = [r["threshold"] for r in sorted(ladder, key=lambda r: -r["fmr"])]
    assert thresholds == sorted(thresholds)
    for rung in ladder:  # on a rung: the rung itself
        assert openset.threshold_at(ladder, rung["fmr"]) == (rung["threshold"], rung["calibrated"])
        assert rung["calibrated"] == (rung["fmr"] * 1_000_000 >= openset.MIN_FALSE_MATCHES)
    between, _ = openset.threshold_at(ladder, 3e-3)
    t2, t5 = openset.threshold_at(ladder, 5e-3)[0], openset.threshold_at(ladder, 2e-3)[0]
    assert t2 < between < t5
    assert abs(fit.empirical_fmr(between) - 3e-3) < 3e-4  # interpolation lands near the true FMR


def test_identify_threshold_grows_with_the_gallery() -> None:
    ladder = openset.fmr_ladder(openset.ImpostorTail.fit(scores(1_000_000, 4)))
    rows = [openset.identify_threshold(ladder, 1e-2, n) for n in (1, 10, 1000, 10**5, 10**8)]
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    assert rows[0]["threshold"] == openset.threshold_at(ladder, 1e-2)[0]  # one template: the 1:1 point
    assert rows[2]["calibrated"] and not rows[4]["calibrated"]
    assert rows[2]["fmr"] == pytest.approx(1e-5, rel=0.01)


def test_stated_fpir_holds_on_held_out_probes() -> None:
    """Fit on one set of impostor scores; search galleries of random unit vectors with other probes."""
    rng = np.random.default_rng(7)
    dim = 128  # random unit vectors in 128-D: cosine ~ N(0, 1/128), sd 0.088 like SFace impostors

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, dim))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    fit_vectors = unit(1500)
    sims = fit_vectors @ fit_vectors.T
    ladder = openset.fmr_ladder(openset.ImpostorTail.fit(sims[np.triu_indices(len(sims), 1)]))
    data = openset.OpenSetData(gallery=unit(2000), gallery_ids=[f"s{i}" for i in range(2000)],
                               mated=np.zeros((0, dim)), mated_ids=[], non_mated=unit(3000))
    for name, point in openset.identify_points().items():
        result = openset.evaluate_open_set(data, ladder, point["fpir"], name=name)
        assert result["gallery_size"] == 2000
        assert result["p_value_fpir_holds"] > 0.01, result  # not significantly above the stated FPIR
    # the 1:1 threshold applied to this gallery would not hold (the defect this replaces)
    assert openset.decisions(data, openset.threshold_at(ladder, 1e-2)[0])["fpir"] > 0.5


def test_binomial_upper_tail() -> None:
    assert openset.binomial_upper_tail(100, 0, 0.01) == 1.0
    assert openset.binomial_upper_tail(100, 1, 0.01) == pytest.approx(1 - 0.99**100)
    assert openset.binomial_upper_tail(1000, 40, 0.01) < 1e-6
