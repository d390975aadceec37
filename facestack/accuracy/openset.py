"""Thresholds at any false-match rate, and open-set identification with a stated FPIR at the gallery's size.

A non-mated probe searched against a gallery of N templates is falsely named when its best impostor score
reaches the threshold. With per-comparison false-match rate FMR(t),

    FPIR(N, t) = 1 - (1 - FMR(t))^N,

the independence model. Probes differ (some resemble many people), which makes the true FPIR lower than the
model's, never higher (1 - (1 - x)^N is concave in x: Jensen), so thresholds from the model are conservative;
the curves at several gallery sizes (`fpir_curves`) and the held-out check (`evaluate_open_set`) measure how far.
The same rule sets verify's threshold against a subject with k templates (the best of k comparisons).

Both need the threshold at an arbitrary FMR. The calibration publishes a ladder of thresholds at FMR 0.5,
0.2, 0.1, ..., 1e-12 (`fmr_ladder`), and `threshold_at` interpolates it linearly in log FMR (exact for an
exponential tail). Ladder rungs come from the impostor scores of the calibration images where at least
MIN_FALSE_MATCHES scores reach them; below that (large galleries) from an exponential tail fitted to the top
TAIL_SCORES impostor scores, the deepest part the data resolves, and are marked `calibrated: false`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facestack.accuracy import metrics

FPIRS = (1e-2, 1e-3)
DEFAULT_IDENTIFY_POINT = "fpir_1e-2"
MIN_FALSE_MATCHES = 10
TAIL_SCORES = 100  # the exponential tail's scale is the mean excess of this many top impostor scores
LADDER_FMRS = tuple(m * 10.0**-e for e in range(1, 13) for m in (5, 2, 1))
RULE = "FPIR(N, t) = 1 - (1 - FMR(t))^N, N = templates searched"


def point_name(fpir: float) -> str:
    return f"fpir_1e-{round(-math.log10(fpir))}" if math.log10(fpir).is_integer() else f"fpir_{fpir:g}"


def fmr_for(fpir: float, comparisons: int) -> float:
    """The per-comparison FMR at which N independent comparisons give this FPIR (about FPIR / N)."""
    return -math.expm1(math.log1p(-fpir) / max(1, comparisons))


def fpir_for(fmr: float, comparisons: int) -> float:
    return -math.expm1(comparisons * math.log1p(-fmr))


@dataclass(frozen=True)
class ImpostorTail:
    """FMR(t) of one embedder: empirical where the impostor scores resolve it, an exponential tail beyond."""

    impostors: int
    anchor: float  # the TAIL_SCORES-th highest impostor score
    anchor_fmr: float  # share of impostor scores at or above the anchor
    scale: float  # their mean excess over the anchor
    resolved_fmr: float  # the smallest FMR the impostor count resolves (MIN_FALSE_MATCHES / impostors)
    sorted_scores: np.ndarray  # descending

    @classmethod
    def fit(cls, impostor_scores: Sequence[float]) -> ImpostorTail:
        s = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
        n = len(s)
        top = min(TAIL_SCORES, n // 2)
        if top < MIN_FALSE_MATCHES:
            raise ValueError(f"{n} impostor scores are too few to fit a tail")
        anchor = float(s[top - 1])
        return cls(n, anchor, top / n, float(max((s[:top] - anchor).mean(), 1e-6)), MIN_FALSE_MATCHES / n, s)

    def empirical_fmr(self, threshold: float) -> float:
        return float(np.searchsorted(-self.sorted_scores, -threshold, side="right")) / self.impostors

    def model_fmr(self, threshold: float) -> float:
        return self.anchor_fmr * math.exp(-(threshold - self.anchor) / self.scale)

    def threshold(self, fmr: float) -> tuple[float, bool]:
        """(threshold, calibrated): empirical when the impostor scores resolve `fmr`, else from the tail."""
        if fmr >= self.resolved_fmr:
            return metrics.threshold_at_fmr(self.sorted_scores, fmr, descending=True)[0], True
        resolved = metrics.threshold_at_fmr(self.sorted_scores, self.resolved_fmr, descending=True)[0]
        t = self.anchor + self.scale * math.log(self.anchor_fmr / fmr)
        return round(max(t, resolved), 6), False  # never below the deepest measured rung

    def describe(self) -> dict:
        return {"model": "exponential tail: FMR(t) = anchor_fmr * exp(-(t - anchor) / scale)",
                "impostor_pairs": self.impostors, "anchor": self.anchor, "anchor_fmr": self.anchor_fmr,
                "scale": self.scale, "resolved_fmr": self.resolved_fmr,
                "highest_impostor_score": float(self.sorted_scores[0])}

    def check(self, fmrs: Sequence[float] = (1e-4, 1e-5, 5e-6, 2e-6)) -> list[dict]:
        """The tail model beside the empirical FMR where both exist (the extrapolation's evidence)."""
        rows = []
        for fmr in fmrs:
            if fmr < self.resolved_fmr:
                continue
            t = metrics.threshold_at_fmr(self.sorted_scores, fmr, descending=True)[0]
            rows.append({"threshold": t, "empirical_fmr": self.empirical_fmr(t), "model_fmr": self.model_fmr(t)})
        return rows


def fmr_ladder(tail: ImpostorTail) -> list[dict]:
    return [{"fmr": fmr, "threshold": t, "calibrated": c}
            for fmr in LADDER_FMRS for t, c in [tail.threshold(fmr)]]


def threshold_at(ladder: Sequence[dict], fmr: float) -> tuple[float, bool]:
    """(threshold, calibrated) at any FMR: log-linear between the ladder's rungs (clamped at its ends)."""
    rungs = sorted(ladder, key=lambda r: -r["fmr"])  # loosest first
    exact = next((r for r in rungs if r["fmr"] == fmr), None)
    if exact is not None or fmr > rungs[0]["fmr"]:
        rung = exact or rungs[0]
        return float(rung["threshold"]), bool(rung["calibrated"])
    for hi, lo in zip(rungs, rungs[1:], strict=False):
        if lo["fmr"] < fmr < hi["fmr"]:
            w = math.log(hi["fmr"] / fmr) / math.log(hi["fmr"] / lo["fmr"])
            t = hi["threshold"] + w * (lo["threshold"] - hi["threshold"])
            return math.ceil(t * 1e6) / 1e6, bool(hi["calibrated"] and lo["calibrated"])  # rounded up: stricter
    return float(rungs[-1]["threshold"]), False


def identify_points(fpirs: Sequence[float] = FPIRS) -> dict[str, dict]:
    return {point_name(f): {"fpir": f, "metric": "cosine", "rule": RULE} for f in fpirs}


def identify_threshold(ladder: Sequence[dict], fpir: float, gallery_size: int) -> dict:
    fmr = fmr_for(fpir, gallery_size)
    threshold, calibrated = threshold_at(ladder, fmr)
    return {"gallery_size": gallery_size, "fmr": fmr, "threshold": threshold, "calibrated": calibrated}


def binomial_upper_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising k false positives are if the true rate is p."""
    if k <= 0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


@dataclass(frozen=True)
class OpenSetData:
    gallery: np.ndarray  # [G, D], one template per subject
    gallery_ids: list[str]
    mated: np.ndarray  # [M, D] probes whose identity is in the gallery
    mated_ids: list[str]
    non_mated: np.ndarray  # [K, D] probes whose identity is not


def decisions(data: OpenSetData, threshold: float, gallery_rows: np.ndarray | None = None) -> dict:
    """Observed outcomes at one threshold, over the whole gallery or the rows given."""
    rows = np.arange(len(data.gallery)) if gallery_rows is None else np.asarray(gallery_rows)
    gallery = data.gallery[rows]
    ids = np.asarray(data.gallery_ids)[rows]
    top_non = (data.non_mated @ gallery.T).max(axis=1) if len(data.non_mated) else np.zeros(0)
    false_positives = int((top_non >= threshold).sum())
    present = np.isin(np.asarray(data.mated_ids), ids)
    mated_sims = data.mated[present] @ gallery.T
    best = mated_sims.argmax(axis=1)
    named = mated_sims.max(axis=1) >= threshold
    right = ids[best] == np.asarray(data.mated_ids)[present]
    return {"gallery_size": len(rows), "threshold": threshold,
            "non_mated_probes": len(top_non), "false_positives": false_positives,
            "fpir": false_positives / max(1, len(top_non)), "unknown_rate": 1 - false_positives / max(1, len(top_non)),
            "mated_probes": int(present.sum()), "rank1_match": float((named & right).mean()) if present.any() else None,
            "wrong_subject": float((named & ~right).mean()) if present.any() else None,
            "fnir": float(1 - (named & right).mean()) if present.any() else None}


def evaluate_open_set(data: OpenSetData, ladder: Sequence[dict], fpir: float, *, name: str,
                      gallery_rows: np.ndarray | None = None) -> dict:
    """The operating point's threshold for this gallery's size, and what it does on these probes."""
    size = len(data.gallery) if gallery_rows is None else len(gallery_rows)
    row = identify_threshold(ladder, fpir, size)
    out = decisions(data, row["threshold"], gallery_rows)
    out.update({"operating_point": name, "stated_fpir": fpir, "fmr_per_comparison": row["fmr"],
                "calibrated": row["calibrated"],
                "p_value_fpir_holds": binomial_upper_tail(out["non_mated_probes"], out["false_positives"], fpir)})
    return out


def fpir_curves(data: OpenSetData, ladder: Sequence[dict], points: dict[str, dict], sizes: Sequence[int],
                seed: int = 0) -> list[dict]:
    """For galleries of several sizes (random subsets, fixed seed): each point's threshold for that size and the
    FPIR/FNIR observed with it."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        if size > len(data.gallery):
            continue
        subset = np.sort(rng.choice(len(data.gallery), size, replace=False))
        for name, point in points.items():
            rows.append(evaluate_open_set(data, ladder, point["fpir"], name=name, gallery_rows=subset))
    return rows
