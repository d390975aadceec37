"""Verification and identification metrics in numpy, for similarity scores where higher means more alike.

Convention throughout: a comparison is a match when `score >= threshold`. A comparison that could not be
made (an image with no face: failure to enrol) carries `FTE_SCORE`, below every cosine similarity, so it is a
non-match at every threshold: a false non-match for a genuine pair, a correct rejection for an impostor pair
(ISO/IEC 19795-1's generalised rates). The counts of such pairs are always reported beside the rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FTE_SCORE = -2.0  # cosine similarity lies in [-1, 1]


def _split(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("scores and labels must be 1-D and the same length")
    return s[y], s[~y]


def _need_both(genuine: np.ndarray, impostor: np.ndarray) -> None:
    if not len(genuine) or not len(impostor):
        raise ValueError("need at least one genuine and one impostor score")


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) at every distinct score, thresholds descending from +inf (far = tar = 0)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    _need_both(*_split(s, y))
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_each = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp = np.cumsum(y_sorted)[last_of_each]
    fp = np.cumsum(~y_sorted)[last_of_each]
    far = np.r_[0.0, fp / (~y).sum()]
    tar = np.r_[0.0, tp / y.sum()]
    return far, tar, np.r_[np.inf, s_sorted[last_of_each]]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC: P(genuine > impostor) + P(tie) / 2 (Mann-Whitney U / (n_g * n_i))."""
    genuine, impostor = _split(scores, labels)
    _need_both(genuine, impostor)
    ranks = _average_ranks(np.concatenate([genuine, impostor]))
    n_g, n_i = len(genuine), len(impostor)
    return float((ranks[:n_g].sum() - n_g * (n_g + 1) / 2) / (n_g * n_i))


def eer(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """(equal error rate, threshold): where FRR = 1 - TAR meets FAR, linearly interpolated between the two
    operating points that bracket the crossing; the threshold is the first one with FAR >= FRR."""
    far, tar, thresholds = roc_curve(scores, labels)
    frr = 1 - tar
    gap = frr - far  # 1 at +inf, -1 at the lowest threshold, non-increasing
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(far[i]), float(thresholds[i])
    alpha = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(far[i - 1] + alpha * (far[i] - far[i - 1])), float(thresholds[i])


THRESHOLD_SLACK = 1e-5  # a threshold sits at most this far above the impostor score it must reject


def _short_above(lo: float, hi: float) -> float:
    """The shortest decimal strictly between lo and hi, as close above lo as that allows (readable, stable)."""
    for decimals in range(1, 16):
        scale = 10.0**decimals
        t = round((math.floor(lo * scale) + 1) / scale, decimals)
        if lo < t < hi:
            return t
    return (lo + hi) / 2


def threshold_at_fmr(impostor_scores: Sequence[float], fmr: float, *, descending: bool = False) -> tuple[float, int]:
    """(threshold, false matches) for the most permissive threshold whose false-match rate is <= fmr.

    At most k = floor(fmr * n) impostor scores may reach the threshold, so it lies strictly above the (k+1)-th
    highest impostor score: the shortest decimal above it, within THRESHOLD_SLACK and below the next higher
    impostor score. Ties at the boundary are all rejected.
    """
    # `descending`: the scores are already sorted high to low (callers asking for many FMRs sort once)
    s = np.asarray(impostor_scores, dtype=np.float64) if descending else \
        np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    n = len(s)
    if n == 0:
        raise ValueError("no impostor scores")
    k = math.floor(fmr * n + 1e-9)
    if k >= n:
        return float(s[-1]), n
    boundary = float(s[k])
    higher = s[:k][s[:k] > boundary]
    upper = min(float(higher[-1]), boundary + THRESHOLD_SLACK) if len(higher) else boundary + THRESHOLD_SLACK
    threshold = _short_above(boundary, upper)
    return threshold, int(np.searchsorted(-s, -threshold, side="right"))


def tar_at_far(scores: Sequence[float], labels: Sequence[bool], far: float) -> dict:
    """TAR at the threshold `threshold_at_fmr` picks, with the counts behind it.

    `false_accepts_allowed` = floor(far * impostors): 0 means the data cannot resolve this FAR (the threshold
    is just above the highest impostor score, an upper bound on the threshold that FAR would need).
    """
    genuine, impostor = _split(scores, labels)
    _need_both(genuine, impostor)
    threshold, false_accepts = threshold_at_fmr(impostor, far)
    return {"far_target": far, "threshold": threshold, "tar": float((genuine >= threshold).mean()),
            "far": false_accepts / len(impostor), "false_accepts": false_accepts,
            "false_accepts_allowed": math.floor(far * len(impostor) + 1e-9),
            "impostors": len(impostor), "genuine": len(genuine)}


def accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> float:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    return float(((s >= threshold) == y).mean())


def best_accuracy_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on these scores; candidates are the midpoints between
    consecutive distinct scores and one step beyond each end; ties go to the lowest such threshold."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not len(s):
        raise ValueError("no scores")
    u = np.unique(s)
    candidates = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2, u[-1] + 1.0]
    genuine, impostor = np.sort(s[y]), np.sort(s[~y])
    accepted_genuine = len(genuine) - np.searchsorted(genuine, candidates, side="left")
    rejected_impostor = np.searchsorted(impostor, candidates, side="left")
    correct = accepted_genuine + rejected_impostor
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / len(s))


def ten_fold(scores: Sequence[float], labels: Sequence[bool], folds: Sequence[int]) -> dict:
    """LFW's View 2 protocol: for each fold, the best-accuracy threshold on the other folds, accuracy on it.

    Reports the mean, the sample standard deviation (ddof=1) and the standard error std / sqrt(folds), as
    the LFW README asks.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    f = np.asarray(folds)
    per_fold, thresholds = [], []
    for fold in np.unique(f):
        train, test = f != fold, f == fold
        threshold, _ = best_accuracy_threshold(s[train], y[train])
        thresholds.append(threshold)
        per_fold.append(accuracy(s[test], y[test], threshold))
    acc = np.array(per_fold)
    std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    return {"mean": float(acc.mean()), "std": std, "standard_error": std / math.sqrt(len(acc)),
            "per_fold": per_fold, "thresholds": thresholds}


def verification_summary(scores: Sequence[float], labels: Sequence[bool],
                         fars: Sequence[float] = (1e-2, 1e-3)) -> dict:
    rate, threshold = eer(scores, labels)
    genuine, impostor = _split(scores, labels)
    return {"genuine": len(genuine), "impostors": len(impostor), "auc": roc_auc(scores, labels),
            "eer": rate, "eer_threshold": threshold,
            "tar_at_far": {f"{far:g}": tar_at_far(scores, labels, far) for far in fars}}


def all_pairs(embeddings: np.ndarray, identities: Sequence[str], enrolled: Sequence[bool]) -> tuple[
        np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine scores over every unordered pair of distinct images.

    Genuine pairs with a failed image score FTE_SCORE (a false non-match); impostor pairs with a failed image
    are left out, so the impostor count (the denominator of every FMR) holds only comparisons that were made.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    ok = np.asarray(enrolled, dtype=bool)
    ids = np.unique(np.asarray(identities), return_inverse=True)[1]
    sims = x @ x.T
    i, j = np.triu_indices(len(x), k=1)
    same = ids[i] == ids[j]
    both = ok[i] & ok[j]
    scored = sims[i, j]
    genuine = np.where(both[same], scored[same], FTE_SCORE)
    impostor = scored[~same & both]
    return genuine, impostor


def identification(gallery: np.ndarray, gallery_ids: Sequence[str], probes: np.ndarray,
                   probe_enrolled: Sequence[bool], probe_ids: Sequence[str | None],
                   ranks: Sequence[int] = (1, 5), fpirs: Sequence[float] = (1e-2, 1e-3)) -> dict:
    """Closed-set rank-k over mated probes and open-set FNIR at FPIR (NIST FRVT's definitions, rank 1).

    `probe_ids[i]` is the identity of a mated probe or None for a non-mated one. A probe that failed to enrol
    returns no candidates: a miss when mated, a correct rejection when not. A mated probe whose identity has
    no gallery entry (none of its images had a face) is a miss too.
    Rank ties count against the mate. FPIR's threshold is set on the non-mated probes' top scores (the same
    rule as `threshold_at_fmr`); FNIR is the share of mated probes whose mate is not the top candidate at a
    score >= that threshold.
    """
    g = np.asarray(gallery, dtype=np.float64)
    column = {name: k for k, name in enumerate(gallery_ids)}
    if len(column) != len(gallery_ids):
        raise ValueError("gallery identities must be unique")
    p = np.asarray(probes, dtype=np.float64).reshape(len(probe_ids), -1)
    ok = np.asarray(probe_enrolled, dtype=bool)
    sims = p @ g.T if len(p) else np.zeros((0, len(g)))
    mated = np.array([pid is not None for pid in probe_ids], dtype=bool)
    mate_rank = np.full(len(p), np.inf)
    mate_score = np.full(len(p), FTE_SCORE)
    for i in np.nonzero(mated & ok)[0]:
        if probe_ids[i] not in column:
            continue  # its identity could not be enrolled: the search cannot find a mate (a miss)
        mate = sims[i, column[probe_ids[i]]]
        mate_score[i] = mate
        mate_rank[i] = int((sims[i] >= mate).sum())  # the mate and every other entry scoring at least as high
    top = np.where(ok, sims.max(axis=1) if len(g) else FTE_SCORE, FTE_SCORE)
    out: dict = {"gallery": len(g), "mated_probes": int(mated.sum()), "non_mated_probes": int((~mated).sum()),
                 "mated_fte": int((mated & ~ok).sum()), "non_mated_fte": int((~mated & ~ok).sum())}
    out["rank"] = {str(k): float((mate_rank[mated] <= k).mean()) if mated.any() else None for k in ranks}
    fnir = {}
    for fpir in fpirs:
        if not (~mated).any() or not mated.any():
            fnir[f"{fpir:g}"] = None
            continue
        threshold, false_alarms = threshold_at_fmr(top[~mated], fpir)
        hits = (mate_rank == 1) & (mate_score >= threshold)
        fnir[f"{fpir:g}"] = {"fnir": float(1 - hits[mated].mean()), "threshold": threshold,
                             "fpir": false_alarms / int((~mated).sum()), "false_alarms": false_alarms,
                             "false_alarms_allowed": math.floor(fpir * int((~mated).sum()) + 1e-9),
                             "non_mated_probes": int((~mated).sum())}
    out["fnir_at_fpir"] = fnir
    return out
