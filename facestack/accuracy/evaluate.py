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

from facestack.accuracy import calibrate, metrics, openset
from facestack.accuracy.dataset import ImageRef, LfwFolder, Pair, by_identity, stable_fraction
from facestack.accuracy.embed import ImageFaces
from facestack.pipeline import choice, quality

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
    """Proposed operating points, 1:1 (FMR) and 1:N (FPIR by gallery size); written only with --calibrate."""
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
    tail = openset.ImpostorTail.fit(impostor)
    return {"operating_points": points, "fmr_ladder": openset.fmr_ladder(tail),
            "identify_operating_points": openset.identify_points(), "impostor_tail": tail.describe(),
            "tail_check": tail.check()}


def evaluate(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str = "centre",
             holdout_share: float = HOLDOUT_SHARE, date: str = "", gate: quality.QualityGate | None = None) -> dict:
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
    ladder = out["calibration"]["fmr_ladder"]
    out["open_set"] = open_set(folder, faces, rule, out["calibration"])
    default = out["calibration"]["operating_points"].get(calibrate.DEFAULT_OPERATING_POINT)
    if default is not None:
        fmr = default["fmr"]
        out["multi_template"] = {"fmr": fmr, "view1_dev_test": multi_template(
            folder.dev_test.images() if folder.dev_test else refs, faces, rule, ladder, fmr),
            "all_images": multi_template(refs, faces, rule, ladder, fmr)}
        out["quality_gates"] = quality_gates(folder, faces, rule, gate or quality.QualityGate.from_settings(),
                                             default["threshold"])
    out["gate_sweep"] = gate_sweep(refs, faces, rule)
    out["face_choice_rules"] = face_choice(folder, faces)
    return out


# --- decisions the gateway states (issue: identify FPIR, multi-template verify, gates, face choice) -------------

def _vector(faces: Mapping[ImageRef, ImageFaces], ref: ImageRef, rule: str) -> np.ndarray | None:
    v = faces[ref].embedding(rule)
    return None if v is None else v.astype(np.float64)


def open_set_data(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str) -> openset.OpenSetData:
    """Held-out open-set data on LFW View 1. Gallery: one image of every DevTrain identity and the first image of
    every DevTest identity with 2+ images; mated probes: those DevTest identities' other images; non-mated probes:
    the DevTest identities with one image. No probe took part in calibration (DevTrain only). Without a View 1
    split, the identities are split by stable_fraction instead (holdout half)."""
    if folder.dev_train is not None and folder.dev_test is not None:
        fit, held = by_identity(folder.dev_train.images()), by_identity(folder.dev_test.images())
    else:
        everyone = by_identity(folder.images())
        fit = {n: r for n, r in everyone.items() if stable_fraction(n) >= HOLDOUT_SHARE}
        held = {n: r for n, r in everyone.items() if stable_fraction(n) < HOLDOUT_SHARE}
    gallery, gallery_ids, mated, mated_ids, non_mated = [], [], [], [], []
    for name, images in [*fit.items(), *held.items()]:
        vectors = [(r, v) for r in images if (v := _vector(faces, r, rule)) is not None]
        if name in held and len(images) == 1:
            non_mated += [v for _, v in vectors]
            continue
        if not vectors:
            continue
        gallery.append(vectors[0][1])
        gallery_ids.append(name)
        if name in held:
            mated += [v for _, v in vectors[1:]]
            mated_ids += [name] * (len(vectors) - 1)

    dim = len(gallery[0]) if gallery else 128

    def stack(rows: list[np.ndarray]) -> np.ndarray:
        return np.array(rows, np.float64).reshape(len(rows), dim)

    return openset.OpenSetData(stack(gallery), gallery_ids, stack(mated), mated_ids, stack(non_mated))


def open_set(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str, calibration: dict) -> dict:
    data = open_set_data(folder, faces, rule)
    ladder, points = calibration["fmr_ladder"], calibration["identify_operating_points"]
    sizes = [s for s in (100, 300, 1000) if s < len(data.gallery)] + [len(data.gallery)]
    return {"gallery": len(data.gallery), "mated_probes": len(data.mated), "non_mated_probes": len(data.non_mated),
            "held_out": {name: openset.evaluate_open_set(data, ladder, point["fpir"], name=name)
                         for name, point in points.items()},
            "curves": openset.fpir_curves(data, ladder, points, sizes)}


def multi_template(refs: Sequence[ImageRef], faces: Mapping[ImageRef, ImageFaces], rule: str,
                   ladder: Sequence[dict], fmr: float, ks: Sequence[int] = (2, 3, 5)) -> list[dict]:
    """Verify against a subject enrolled with k photos: three decision rules at one target FMR.

    `max`: best of the k similarities, the 1:1 threshold (what the gateway did: FMR up to k times the target);
    `max_adjusted`: best of k, threshold for FMR 1 - (1 - fmr)^(1/k) per comparison; `fused`: similarity to the
    normalised mean of the k templates, the 1:1 threshold. Subjects: identities with k + 1 or more images (first
    k enrolled, the rest probes); impostors: every probe against every other subject.
    """
    rows = []
    base, _ = openset.threshold_at(ladder, fmr)
    for k in ks:
        subjects, probes, owner = [], [], []
        for images in by_identity(refs).values():
            vectors = [v for r in images if (v := _vector(faces, r, rule)) is not None]
            if len(vectors) <= k:
                continue
            subjects.append(np.array(vectors[:k]))
            probes += vectors[k:]
            owner += [len(subjects) - 1] * (len(vectors) - k)
        if len(subjects) < 2:
            continue
        templates = np.array(subjects)  # [S, k, D]
        p = np.array(probes)
        sims = np.einsum("pd,skd->psk", p, templates)  # [P, S, k]
        fused = templates.mean(axis=1)
        fused /= np.linalg.norm(fused, axis=1, keepdims=True)
        scores = {"max": sims.max(axis=2), "max_adjusted": sims.max(axis=2), "fused": p @ fused.T}
        thresholds = {"max": base, "fused": base,
                      "max_adjusted": openset.threshold_at(ladder, openset.fmr_for(fmr, k))[0]}
        own = np.zeros_like(scores["max"], bool)
        own[np.arange(len(p)), owner] = True
        for rule_name, s in scores.items():
            t = thresholds[rule_name]
            genuine, impostor = s[own], s[~own]
            rows.append({"k": k, "rule": rule_name, "threshold": t, "subjects": len(subjects),
                         "genuine": len(genuine), "impostor": len(impostor),
                         "tar": float((genuine >= t).mean()), "fmr": float((impostor >= t).mean()),
                         "false_matches": int((impostor >= t).sum())})
    return rows


def _refused(faces: ImageFaces, rule: str, gate: quality.QualityGate) -> list[str] | None:
    """The gates the chosen face fails ([] = accepted); None when there is no face or no quality recorded."""
    face = faces.choose(rule)
    if face is None or faces.quality is None:
        return None
    return [r.gate for r in gate.refusals(quality.as_dict(faces.quality[face]))]


def quality_gates(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces], rule: str, gate: quality.QualityGate,
                  threshold: float) -> dict:
    """What each gate refuses of the images and costs the DevTest pairs, and what it buys (accuracy of the
    pairs it accepts, at `threshold`)."""
    refs = folder.images()
    verdicts = {r: _refused(faces[r], rule, gate) for r in refs}
    names = list(quality.GATE_WORDS)
    images = {g: sum(1 for v in verdicts.values() if v and g in v) for g in names}
    total = sum(1 for v in verdicts.values() if v)
    out: dict = {"gate": {"min_face_size": gate.min_face_size, "min_sharpness": gate.min_sharpness,
                          "max_pose_deg": gate.max_pose_deg, "brightness": list(gate.brightness)},
                 "images": len(refs), "no_face": sum(1 for v in verdicts.values() if v is None),
                 "refused": {g: {"images": n, "share": n / len(refs)} for g, n in images.items()},
                 "refused_any": {"images": total, "share": total / len(refs)},
                 "refused_examples": {g: [r.relative for r, v in verdicts.items() if v and g in v][:10] for g in names}}
    if folder.dev_test is not None:
        pairs = folder.dev_test.pairs
        scores, labels, failed = pair_scores(pairs, faces, rule)
        by_pair = [set((verdicts[p.first] or []) + (verdicts[p.second] or [])) for p in pairs]
        refused = np.array([bool(g) for g in by_pair])
        decided = scores >= threshold
        correct = decided == labels
        out["dev_test_pairs"] = {
            "pairs": len(pairs), "threshold": threshold,
            "genuine_refused": {g: int(sum(1 for b, lab in zip(by_pair, labels, strict=True) if lab and g in b))
                                for g in names},
            "genuine_refused_any": int((refused & labels).sum()), "genuine": int(labels.sum()),
            "genuine_refused_share": float((refused & labels).sum() / max(1, labels.sum())),
            "impostor_refused_any": int((refused & ~labels).sum()),
            "accuracy_all_pairs": float(correct.mean()),
            "accuracy_accepted_pairs": float(correct[~refused].mean()) if (~refused).any() else None,
            "accuracy_refused_pairs": float(correct[refused].mean()) if refused.any() else None,
            "no_face_pairs": int(failed.sum())}
    return out


def gate_sweep(refs: Sequence[ImageRef], faces: Mapping[ImageRef, ImageFaces], rule: str) -> dict:
    """Share of images each gate alone would refuse at a few settings (how the defaults were chosen)."""
    qualities = [quality.as_dict(f.quality[i]) for r in refs
                 if (f := faces[r]).quality is not None and (i := f.choose(rule)) is not None]
    if not qualities:
        return {}
    n = len(refs)
    return {
        "max_pose_deg": {str(v): sum(1 for q in qualities if max(abs(q["yaw"]), abs(q["pitch"])) > v) / n
                         for v in (30, 40, 45, 50, 60, 70)},
        "min_sharpness": {str(v): sum(1 for q in qualities if q["sharpness"] < v) / n for v in (5, 10, 15, 20, 30)},
        "min_face_size": {str(v): sum(1 for q in qualities if q["face_size"] < v) / n for v in (20, 30, 40, 60)},
        "brightness_low": {str(v): sum(1 for q in qualities if q["brightness"] < v) / n for v in (15, 25, 40)},
        "brightness_high": {str(v): sum(1 for q in qualities if q["brightness"] > v) / n for v in (220, 235, 245)},
    }


def face_choice(folder: LfwFolder, faces: Mapping[ImageRef, ImageFaces]) -> dict:
    """View 1 DevTest accuracy with each rule for choosing among several faces (LFW labels the centred face)."""
    refs = folder.images()
    out = {}
    for rule in choice.RULES:
        differs = sum(1 for r in refs if len(faces[r]) > 1 and faces[r].choose(rule) != faces[r].choose("centre"))
        entry: dict = {"images_choosing_another_face_than_centre": differs}
        if folder.dev_train is not None and folder.dev_test is not None:  # View 1's protocol, pairs only
            tr_scores, tr_labels, _ = pair_scores(folder.dev_train.pairs, faces, rule)
            te_scores, te_labels, _ = pair_scores(folder.dev_test.pairs, faces, rule)
            threshold, _ = metrics.best_accuracy_threshold(tr_scores, tr_labels)
            entry.update({"dev_test_accuracy": metrics.accuracy(te_scores, te_labels, threshold),
                          "threshold": threshold, "dev_test_auc": metrics.roc_auc(te_scores, te_labels)})
        out[rule] = entry
    return out
