"""From per-image faces (embed.py) to the numbers: verification, identification and proposed thresholds.

Which pairs decide what, for a folder in LFW layout:
- View 1 (`pairsDevTrain.txt` + `pairsDevTest.txt`): the best-accuracy threshold on DevTrain, accuracy on
  DevTest (the headline); AUC, EER and TAR at FAR on the DevTest pairs, and again over every pair of DevTest
  images (about 1.2 million impostor comparisons, so FAR 1e-3 and below are resolved).
- View 2 (`pairs.txt`, "10 300"): the 10-fold protocol.
- Calibration: every cross-identity pair of the DevTrain images (or of all images when there is no DevTrain),
  checked on the DevTest images when they are there.
- Identification: over every image the pairs files name (below).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facestack.accuracy import calibrate, metrics
from facestack.accuracy.dataset import ImageRef, LfwFolder, Pair, by_identity, stable_fraction
from facestack.accuracy.embed import ImageFaces

FARS = (1e-2, 1e-3)
ALL_PAIRS_FARS = (1e-2, 1e-3, 1e-4, 1e-5)
HOLDOUT_SHARE = 0.5


def _embedding_matrix(refs: Sequence[ImageRef], faces: Mapping[ImageRef, ImageFaces],
                      rule: str) -> tuple[np.ndarray, np.ndarray]:
    """([N, D] embeddings, [N] enrolled); rows of images without a face are zeros."""
    dim = next((f.embeddings.shape[1] for f in faces.values() if len(f)), 128)
    matrix = np.zeros((len(refs), dim), np.float64)
    enrolled = np.zeros(len(refs), bool)
    for k, ref in enumerate(refs):
        vector = faces[ref].embedding(rule)
        if vector is not None:
            matrix[k], enrolled[k] = vector, True
    return matrix, enrolled


def pair_scores(pairs: Sequence[Pair], faces: Mapping[ImageRef, ImageFaces],
                rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, same-person labels, failed) for pairs: cosine of the chosen faces' L2-normalised embeddings,
    FTE_SCORE (a non-match at every threshold) when either image has no face."""
    scores = np.empty(len(pairs))
    labels = np.array([p.same for p in pairs], bool)
    failed = np.zeros(len(pairs), bool)
    for k, pair in enumerate(pairs):
        a, b = faces[pair.first].embedding(rule), faces[pair.second].embedding(rule)
        if a is None or b is None:
            scores[k], failed[k] = metrics.FTE_SCORE, True
        else:
            scores[k] = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    return scores, labels, failed


def _fte_counts(labels: np.ndarray, failed: np.ndarray) -> dict:
    return {"genuine": int((failed & labels).sum()), "impostor": int((failed & ~labels).sum())}


def image_summary(refs: Sequence[ImageRef], faces: Mapping[ImageRef, ImageFaces]) -> dict:
    multi = [r for r in refs if len(faces[r]) > 1]
    differs = [r for r in multi if faces[r].choose("centre") != faces[r].choose("largest")]
    failed = [r for r in refs if faces[r].choose() is None]
    return {"images": len(refs), "fte": len(failed), "fte_images": [r.relative for r in failed],
            "errors": sum(1 for r in refs if faces[r].error), "multi_face": len(multi),
            "centre_differs_from_largest": len(differs),
            "centre_differs_images": [r.relative for r in differs]}


def view1(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str) -> dict:
    """DevTrain chooses the threshold, DevTest is scored once with it."""
    assert folder.dev_train is not None and folder.dev_test is not None
    tr_scores, tr_labels, tr_failed = pair_scores(folder.dev_train.pairs, faces, rule)
    te_scores, te_labels, te_failed = pair_scores(folder.dev_test.pairs, faces, rule)
    threshold, train_acc = metrics.best_accuracy_threshold(tr_scores, tr_labels)
    enrolled = ~te_failed
    test_refs = folder.dev_test.images()
    matrix, ok = _embedding_matrix(test_refs, faces, rule)
    genuine, impostor = metrics.all_pairs(matrix, [r.name for r in test_refs], ok)
    all_scores = np.r_[genuine, impostor]
    all_labels = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    return {
        "threshold": threshold, "dev_train_accuracy": train_acc,
        "dev_test_accuracy": metrics.accuracy(te_scores, te_labels, threshold),
        "dev_test_accuracy_enrolled_pairs_only": metrics.accuracy(te_scores[enrolled], te_labels[enrolled],
                                                                  threshold),
        "dev_test_errors": {"false_non_matches": int(((te_scores < threshold) & te_labels).sum()),
                            "false_matches": int(((te_scores >= threshold) & ~te_labels).sum())},
        "fte_pairs": {"dev_train": _fte_counts(tr_labels, tr_failed), "dev_test": _fte_counts(te_labels, te_failed)},
        "dev_test": metrics.verification_summary(te_scores, te_labels, FARS),
        "dev_test_all_pairs": {"images": len(test_refs),
                               **metrics.verification_summary(all_scores, all_labels, ALL_PAIRS_FARS)},
    }


def view2(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str) -> dict:
    assert folder.view2 is not None
    fold_ids = np.concatenate([np.full(len(fold), k) for k, fold in enumerate(folder.view2.folds)])
    scores, labels, failed = pair_scores(folder.view2.pairs, faces, rule)
    return {"ten_fold": metrics.ten_fold(scores, labels, fold_ids), "fte_pairs": _fte_counts(labels, failed),
            "pairs": metrics.verification_summary(scores, labels, FARS)}


def identification(refs: Sequence[ImageRef], faces: Mapping[ImageRef, ImageFaces], rule: str,
                   holdout_share: float = HOLDOUT_SHARE) -> dict:
    """Gallery: one image per identity (its lowest-numbered image with a face: enrolment retries the next
    image); mated probes: that identity's other images; non-mated probes: every image of the identities held
    out, those whose sha256-derived fraction is below `holdout_share` (fixed by the name, not by order).
    Identities none of whose images has a face stay out of the gallery; their images count as mated probes
    that failed (misses)."""
    gallery_ids, gallery_refs, probe_refs, probe_ids = [], [], [], []
    no_gallery = 0
    for name, images in by_identity(refs).items():
        if stable_fraction(name) < holdout_share:
            probe_refs += images
            probe_ids += [None] * len(images)
            continue
        first = next((r for r in images if faces[r].choose(rule) is not None), None)
        if first is None:
            no_gallery += 1  # its images stay mated probes that cannot be found (misses)
        else:
            gallery_ids.append(name)
            gallery_refs.append(first)
        others = [r for r in images if r != first]
        probe_refs += others
        probe_ids += [name] * len(others)
    gallery, _ = _embedding_matrix(gallery_refs, faces, rule)
    probes, ok = _embedding_matrix(probe_refs, faces, rule)
    result = metrics.identification(gallery, gallery_ids, probes, ok, probe_ids)
    result.update({"identities": len(by_identity(refs)), "holdout_share": holdout_share,
                   "identities_held_out": sum(1 for n in by_identity(refs) if stable_fraction(n) < holdout_share),
                   "identities_without_gallery_image": no_gallery})
    return result


def calibration(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str, date: str) -> dict:
    """Proposed operating points (written only with --calibrate)."""
    if folder.dev_train is not None:
        refs, name = folder.dev_train.images(), "LFW View 1 DevTrain"
        heldout_refs = folder.dev_test.images() if folder.dev_test is not None else None
    else:
        refs, name, heldout_refs = folder.images(), f"all images of {folder.root.name}", None
    matrix, ok = _embedding_matrix(refs, faces, rule)
    genuine, impostor = metrics.all_pairs(matrix, [r.name for r in refs], ok)
    dataset = (f"{name} ({folder.root.name}): every pair of its {len(refs)} images, {int((~ok).sum())} without a "
               f"face ({rule} face)")
    heldout = heldout_name = None
    if heldout_refs is not None:
        h_matrix, h_ok = _embedding_matrix(heldout_refs, faces, rule)
        heldout = metrics.all_pairs(h_matrix, [r.name for r in heldout_refs], h_ok)
        heldout_name = f"LFW View 1 DevTest: every pair of its {len(heldout_refs)} images"
    points = calibrate.operating_points(genuine, impostor, dataset=dataset, date=date, heldout=heldout,
                                        heldout_dataset=heldout_name)
    return {"operating_points": points}


def evaluate(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str = "centre",
             holdout_share: float = HOLDOUT_SHARE, date: str = "") -> dict:
    refs = folder.images()
    out: dict = {"face_choice": rule, "images": image_summary(refs, faces), "verification": {}}
    if folder.dev_train is not None and folder.dev_test is not None:
        out["verification"]["view1"] = view1(folder, faces, rule)
        other = "largest" if rule == "centre" else "centre"
        alt = view1(folder, faces, other)
        out["verification"]["view1_other_face_choice"] = {
            "face_choice": other, "threshold": alt["threshold"], "dev_test_accuracy": alt["dev_test_accuracy"],
            "dev_test_auc": alt["dev_test"]["auc"]}
    if folder.view2 is not None:
        out["verification"]["view2"] = view2(folder, faces, rule)
    for key, pf in folder.pairs_files().items():
        if key in ("dev_train", "dev_test") and "view1" in out["verification"]:
            continue
        scores, labels, failed = pair_scores(pf.pairs, faces, rule)
        if key != "view2":
            threshold, acc = metrics.best_accuracy_threshold(scores, labels)
            out["verification"][key] = {"best_accuracy_on_same_pairs": acc, "threshold": threshold,
                                        "fte_pairs": _fte_counts(labels, failed),
                                        **metrics.verification_summary(scores, labels, FARS)}
    out["identification"] = identification(refs, faces, rule, holdout_share)
    out["calibration"] = calibration(folder, faces, rule, date)
    return out
