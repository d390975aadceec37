"""facestack.accuracy: metrics against brute force, pairs files, calibration, failure-to-enrol accounting,
and one small run through the real Triton on LFW pairs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from facestack.accuracy import calibrate, evaluate, metrics, openset
from facestack.accuracy.__main__ import main
from facestack.accuracy.dataset import ImageRef, LfwFolder, Pair, PairsFormatError, format_pairs, parse_pairs
from facestack.accuracy.embed import EmbeddingCache, ImageFaces

# --------------------------------------------------------------------------------------------------------
# brute-force references, written independently of the implementation


def brute_auc(genuine, impostor) -> float:
    wins = sum(1.0 if g > i else 0.5 if g == i else 0.0 for g in genuine for i in impostor)
    return wins / (len(genuine) * len(impostor))


def brute_rates(genuine, impostor, t) -> tuple[float, float]:
    """(FAR, TAR) accepting score >= t."""
    return sum(i >= t for i in impostor) / len(impostor), sum(g >= t for g in genuine) / len(genuine)


def brute_tar_at_far(genuine, impostor, far) -> tuple[float, int]:
    """Best TAR over every threshold whose FAR <= far, and its false accepts."""
    best = (0.0, 0)
    for t in sorted(set(genuine) | set(impostor)) + [math.inf]:
        f, tar = brute_rates(genuine, impostor, t)
        if f <= far + 1e-12 and tar > best[0]:
            best = (tar, sum(i >= t for i in impostor))
    return best


def brute_best_accuracy(scores, labels) -> float:
    best = 0.0
    for t in sorted(set(scores)) + [math.inf]:
        best = max(best, sum((s >= t) == y for s, y in zip(scores, labels, strict=True)) / len(scores))
    return best


def _scores(rng, n_gen, n_imp, quantise=None):
    genuine, impostor = rng.normal(1.0, 1.0, n_gen), rng.normal(-1.0, 1.0, n_imp)
    if quantise:  # force ties
        genuine, impostor = np.round(genuine * quantise) / quantise, np.round(impostor * quantise) / quantise
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(n_gen, bool), np.zeros(n_imp, bool)]
    return scores, labels, list(genuine), list(impostor)


# --------------------------------------------------------------------------------------------------------
# metrics


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, labels, genuine, impostor = _scores(rng, 40, 55, quantise=3 if seed % 2 else None)
    assert metrics.roc_auc(scores, labels) == pytest.approx(brute_auc(genuine, impostor), abs=1e-12)


def test_auc_and_eer_known_answers() -> None:
    assert metrics.roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert metrics.roc_auc([0.5, 0.5], [1, 0]) == 0.5
    # FRR/FAR by hand: at t=0.6 one genuine of four (0.3) is rejected and one impostor of four (0.6) accepted.
    rate, threshold = metrics.eer([0.9, 0.8, 0.7, 0.3, 0.6, 0.5, 0.4, 0.2], [1, 1, 1, 1, 0, 0, 0, 0])
    assert (rate, threshold) == (0.25, 0.6)
    # Two unit Gaussians 2 apart: EER = Phi(-1) = 0.1587 analytically.
    rng = np.random.default_rng(7)
    scores, labels, _, _ = _scores(rng, 20000, 20000)
    assert metrics.eer(scores, labels)[0] == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), abs=0.006)


def test_roc_curve_points_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores, labels, genuine, impostor = _scores(rng, 30, 30, quantise=4)
    far, tar, thresholds = metrics.roc_curve(scores, labels)
    assert thresholds[0] == math.inf and far[0] == tar[0] == 0 and far[-1] == tar[-1] == 1
    assert np.all(np.diff(thresholds) < 0)
    for f, t, th in zip(far, tar, thresholds, strict=True):
        assert (f, t) == pytest.approx(brute_rates(genuine, impostor, th))


@pytest.mark.parametrize(("seed", "far"), [(0, 0.1), (1, 0.05), (2, 0.01), (3, 0.2), (4, 0.001)])
def test_tar_at_far_matches_brute_force(seed: int, far: float) -> None:
    rng = np.random.default_rng(seed)
    scores, labels, genuine, impostor = _scores(rng, 50, 200, quantise=5 if seed % 2 else None)
    got = metrics.tar_at_far(scores, labels, far)
    tar, false_accepts = brute_tar_at_far(genuine, impostor, far)
    assert got["tar"] == pytest.approx(tar)
    assert got["false_accepts"] == false_accepts <= got["false_accepts_allowed"] == math.floor(far * 200 + 1e-9)
    assert got["impostors"] == 200 and got["genuine"] == 50


def test_threshold_at_fmr_ties_and_edges() -> None:
    # 10 impostors, FMR 0.2 allows 2; the 2nd and 3rd highest tie, so only 1 may be accepted.
    impostor = [0.9, 0.8, 0.8, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0]
    threshold, false_matches = metrics.threshold_at_fmr(impostor, 0.2)
    assert 0.8 < threshold < 0.9 and false_matches == 1
    threshold, false_matches = metrics.threshold_at_fmr(impostor, 0.01)  # none allowed: just above the maximum
    assert 0.9 < threshold <= 0.9 + metrics.THRESHOLD_SLACK and false_matches == 0
    assert metrics.threshold_at_fmr(impostor, 1.0) == (0.0, 10)
    assert metrics.threshold_at_fmr([0.3, 0.123456789], 0.5) == (0.12346, 1)  # shortest decimal just above


@pytest.mark.parametrize("seed", range(3))
def test_best_accuracy_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, labels, _, _ = _scores(rng, 60, 60, quantise=2 if seed else None)
    threshold, acc = metrics.best_accuracy_threshold(scores, labels)
    assert acc == pytest.approx(brute_best_accuracy(list(scores), list(labels)))
    assert metrics.accuracy(scores, labels, threshold) == pytest.approx(acc)


def test_ten_fold_known_answer() -> None:
    """Each fold: 300 genuine in [0.5, 1], 300 impostors in [-0.5, 0.3] but one at 0.95. Training on nine folds
    puts the threshold in the gap, so every test fold loses exactly its one high impostor: 599/600."""
    rng = np.random.default_rng(11)
    scores, labels, folds = [], [], []
    for fold in range(10):
        impostor = rng.uniform(-0.5, 0.3, 300)
        impostor[0] = 0.95
        scores += list(rng.uniform(0.5, 1.0, 300)) + list(impostor)
        labels += [True] * 300 + [False] * 300
        folds += [fold] * 600
    result = metrics.ten_fold(scores, labels, folds)
    assert result["per_fold"] == [599 / 600] * 10
    assert result["mean"] == pytest.approx(599 / 600) and result["std"] == 0 and result["standard_error"] == 0
    assert all(0.3 < t < 0.5 for t in result["thresholds"])


def test_all_pairs_counts_and_fte() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = ["a", "a", "b", "b", "b", "c", "d"]
    ok = [True, True, True, False, True, True, True]
    genuine, impostor = metrics.all_pairs(x, ids, ok)
    want_g, want_i = [], []
    for i, j in itertools.combinations(range(7), 2):
        if ids[i] == ids[j]:
            want_g.append(float(x[i] @ x[j]) if ok[i] and ok[j] else metrics.FTE_SCORE)
        elif ok[i] and ok[j]:
            want_i.append(float(x[i] @ x[j]))
    np.testing.assert_allclose(sorted(genuine), sorted(want_g))
    np.testing.assert_allclose(sorted(impostor), sorted(want_i))
    assert len(genuine) == 4 and (genuine == metrics.FTE_SCORE).sum() == 2


def test_identification_by_hand() -> None:
    gallery = np.eye(3)  # identities a, b, c
    s = 1 / math.sqrt(2)
    probes = np.array([
        [0.9, 0.1, 0.0],  # a: rank 1, top 0.9
        [0.6, 0.5, 0.0],  # b: rank 2
        [s, 0.0, s],      # c: tie with a at 0.707 -> rank 2 (ties count against the mate)
        [0.0, 0.0, 0.0],  # a, failed to enrol -> miss
        [0.3, 0.2, 0.1],  # non-mated, top 0.3
        [0.0, 0.8, 0.0],  # non-mated, top 0.8
        [0.0, 0.0, 0.0],  # non-mated, failed -> no candidate
    ])
    enrolled = [True, True, True, False, True, True, False]
    ids = ["a", "b", "c", "a", None, None, None]
    result = metrics.identification(gallery, ["a", "b", "c"], probes, enrolled, ids, ranks=(1, 2, 5), fpirs=(0.4, 0.1))
    assert result["mated_probes"] == 4 and result["non_mated_probes"] == 3
    assert result["mated_fte"] == 1 and result["non_mated_fte"] == 1
    assert result["rank"] == {"1": 0.25, "2": 0.75, "5": 0.75}
    # FPIR 0.4 of 3 non-mated allows 1 false alarm: threshold between 0.3 and 0.8; only probe 0 is a hit.
    f = result["fnir_at_fpir"]["0.4"]
    assert 0.3 < f["threshold"] < 0.8 and f["false_alarms"] == 1 and f["fnir"] == 0.75
    # FPIR 0.1 allows none: threshold above 0.8, probe 0 (0.9) is still a hit.
    f = result["fnir_at_fpir"]["0.1"]
    assert 0.8 < f["threshold"] < 0.9 and f["false_alarms"] == 0 and f["fnir"] == 0.75


# --------------------------------------------------------------------------------------------------------
# pairs files and folders


VIEW1 = "2\nAl\t1\t2\nBo\t1\t3\nAl\t1\tBo\t2\nCy\t4\tAl\t2\n"


def test_parse_view1_pairs() -> None:
    pf = parse_pairs(VIEW1)
    assert len(pf.folds) == 1 and len(pf.pairs) == 4
    assert pf.pairs[0] == Pair(ImageRef("Al", 1), ImageRef("Al", 2)) and pf.pairs[0].same
    assert pf.pairs[3] == Pair(ImageRef("Cy", 4), ImageRef("Al", 2)) and not pf.pairs[3].same
    assert ImageRef("Cy", 4).relative == "Cy/Cy_0004.jpg"
    assert pf.images()[0] == ImageRef("Al", 1) and len(pf.images()) == 6


def test_parse_view2_pairs_with_folds() -> None:
    """The View 2 header "folds n": each fold n same-person then n different-person pairs."""
    lines = ["10\t300"]
    for fold in range(10):
        lines += [f"P{fold}_{k}\t1\t2" for k in range(300)]
        lines += [f"P{fold}_{k}\t1\tQ{fold}_{k}\t1" for k in range(300)]
    pf = parse_pairs("\n".join(lines) + "\n")
    assert len(pf.folds) == 10 and all(len(f) == 600 for f in pf.folds)
    assert all(p.same for p in pf.folds[3][:300]) and not any(p.same for p in pf.folds[3][300:])
    assert parse_pairs(format_pairs(pf.pairs, folds=10)).folds == pf.folds


@pytest.mark.parametrize("text", [
    "",
    "x\nAl\t1\t2\n",                       # header not a number
    "2\nAl\t1\t2\nAl\t1\tBo\t2\n",         # fewer lines than announced
    "1\nAl\t1\tBo\t2\nAl\t1\t2\n",         # different before same
    "1\nAl\t1\t2\nAl\t1\tAl\t2\n",         # a 4-field line naming one person
    "1\nAl\t1\t2\t3\t4\nAl\t1\tBo\t2\n",   # 5 fields
    "1\nAl\tone\t2\nAl\t1\tBo\t2\n",       # not an integer
])
def test_malformed_pairs_files_are_refused(text: str) -> None:
    with pytest.raises(PairsFormatError):
        parse_pairs(text)


@pytest.mark.parametrize("nested", [True, False])
def test_lfw_folder_layouts(tmp_path: Path, nested: bool) -> None:
    (tmp_path / "pairsDevTest.txt").write_text(VIEW1)
    images = tmp_path / "images" if nested else tmp_path
    (images / "Al").mkdir(parents=True)
    (images / "Al" / "Al_0001.jpg").write_bytes(b"x")
    folder = LfwFolder.open(tmp_path)
    assert folder.dev_test is not None and folder.dev_train is None and folder.view2 is None
    assert folder.path(ImageRef("Al", 1)) == images / "Al" / "Al_0001.jpg"
    assert len(folder.missing()) == 5
    with pytest.raises(FileNotFoundError):
        LfwFolder.open(tmp_path / "images" if nested else tmp_path / "Al")


# --------------------------------------------------------------------------------------------------------
# faces, cache, failure to enrol, calibration on synthetic embeddings


def _faces(vectors: list[np.ndarray], boxes: list[list[float]] | None = None, size=(250, 250)) -> ImageFaces:
    n = len(vectors)
    boxes = boxes or [[75 + 10 * k, 75, 175, 175] for k in range(n)]
    embeddings = np.array(vectors, np.float32).reshape(n, -1) if n else np.zeros((0, 128), np.float32)
    return ImageFaces(np.array(boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                      np.zeros((n, 5, 2), np.float32), embeddings, size)


def test_face_choice_centre_vs_largest() -> None:
    # A larger bystander at the edge (listed first, as the pipeline sorts) and the centred subject.
    faces = _faces([np.eye(4)[0], np.eye(4)[1]], boxes=[[0, 0, 120, 120], [90, 90, 160, 160]])
    assert faces.choose("largest") == 0 and faces.choose("centre") == 1
    assert _faces([]).choose("centre") is None and _faces([]).embedding() is None
    with pytest.raises(ValueError):
        faces.choose("leftmost")


def test_cache_round_trip_and_torn_line(tmp_path: Path) -> None:
    faces = _faces([np.arange(128) / 128.0, -np.arange(128) / 128.0])
    cache = EmbeddingCache(tmp_path / "c.jsonl", {"id": "x"})
    cache.put("aa", "A/A_0001.jpg", faces)
    cache.put("bb", "B/B_0001.jpg", _faces([]))
    with (tmp_path / "c.jsonl").open("a") as out:
        out.write('{"sha256": "cc", "resu')  # a run killed mid-write
    again = EmbeddingCache(tmp_path / "c.jsonl")
    assert set(again.records) == {"aa", "bb"}
    np.testing.assert_array_equal(again.get("aa").embeddings, faces.embeddings)
    np.testing.assert_array_equal(again.get("aa").boxes, faces.boxes)
    assert len(again.get("bb")) == 0


def _synthetic(tmp_path: Path, seed: int = 0, dim: int = 16):
    """A View 1 folder (pairs files only) and faces: identities are noisy copies of a random direction."""
    rng = np.random.default_rng(seed)
    lines = {"pairsDevTrain.txt": [], "pairsDevTest.txt": []}
    faces: dict[ImageRef, ImageFaces] = {}
    for split, prefix, n_ids in (("pairsDevTrain.txt", "Tr", 30), ("pairsDevTest.txt", "Te", 20)):
        names = [f"{prefix}{k:02d}" for k in range(n_ids)]
        for name in names:
            centre = rng.normal(size=dim)
            for index in (1, 2, 3):
                v = centre + rng.normal(scale=0.5, size=dim)
                faces[ImageRef(name, index)] = _faces([v / np.linalg.norm(v)])
        same = [f"{n}\t1\t{2 + k % 2}" for k, n in enumerate(names)]
        diff = [f"{names[k]}\t{1 + k % 3}\t{names[(k + 1) % n_ids]}\t{1 + (k + 1) % 3}" for k in range(n_ids)]
        lines[split] = [str(n_ids), *same, *diff]
    for name, body in lines.items():
        (tmp_path / name).write_text("\n".join(body) + "\n")
    return LfwFolder.open(tmp_path), faces


def test_failure_to_enrol_is_counted_and_scored_as_non_match(tmp_path: Path) -> None:
    folder, faces = _synthetic(tmp_path)
    # Te00 image 1 is in the first genuine DevTest pair ("Te00 1 2") and the first impostor pair ("Te00 1 Te01 2").
    faces[ImageRef("Te00", 1)] = _faces([])
    scores, labels, failed = evaluate.pair_scores(folder.dev_test.pairs, faces, "centre")
    assert failed.sum() == 2 and scores[0] == metrics.FTE_SCORE and labels[0]
    result = evaluate.evaluate(folder, faces, "centre", date="2024-01-01")
    assert result["images"]["fte"] == 1 and result["images"]["fte_images"] == ["Te00/Te00_0001.jpg"]
    v1 = result["verification"]["view1"]
    assert v1["fte_pairs"]["dev_test"] == {"genuine": 1, "impostor": 1}
    assert v1["dev_test_errors"]["false_non_matches"] >= 1  # the failed genuine pair is a false non-match
    n_errors = v1["dev_test_errors"]["false_non_matches"] + v1["dev_test_errors"]["false_matches"]
    assert v1["dev_test_accuracy"] == pytest.approx(1 - n_errors / 40)
    # Identification: the failed image is either a mated probe that missed or a skipped gallery candidate.
    ident = result["identification"]
    assert ident["mated_fte"] + ident["non_mated_fte"] <= 1
    assert ident["mated_probes"] + ident["non_mated_probes"] + ident["gallery"] == len(folder.images())
    assert all(0 <= v <= 1 for v in ident["rank"].values())


def test_calibration_is_reproducible_and_order_independent(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(0.7, 0.1, 3000), rng.normal(0.0, 0.1, 200_000)
    first = calibrate.operating_points(genuine, impostor, dataset="d", date="2024-01-01")
    again = calibrate.operating_points(genuine.copy(), rng.permutation(impostor), dataset="d", date="2024-01-01")
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    # 200,000 impostors support FMR down to 1e-4 (>= 10 false matches each), not 1e-5.
    assert list(first) == ["fmr_1e-2", "fmr_1e-3", "fmr_1e-4"]
    for name, entry in first.items():
        assert entry["false_matches"] <= entry["fmr"] * len(impostor)
        assert entry["impostor_pairs"] == 200_000 and entry["measured_fmr"] == entry["false_matches"] / 200_000
        assert entry["threshold"] == float(f"{entry['threshold']:.12g}")
        assert name == calibrate.point_name(entry["fmr"])
    # Through the evaluation: the same synthetic embeddings give identical thresholds.
    folder, faces = _synthetic(tmp_path)
    one = evaluate.calibration(folder, faces, "centre", "2024-01-01")
    two = evaluate.calibration(folder, dict(reversed(list(faces.items()))), "centre", "2024-01-01")
    assert one == two


def test_thresholds_and_manifests_written(tmp_path: Path) -> None:
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"face_embedder": {"old": 1}, "face_embedder_dlib": {"keep": 1}}))
    repo = tmp_path / "repo"
    for version, sha in (("1", "abc"), ("2", "def")):
        (repo / "face_embedder" / version).mkdir(parents=True)
        (repo / "face_embedder" / version / "manifest.json").write_text(
            json.dumps({"name": "face_embedder", "output": {"sha256": sha}, "thresholds": {}}))
    rng = np.random.default_rng(2)
    impostor = rng.normal(0, 0.1, 5000)
    points = calibrate.operating_points(rng.normal(0.7, 0.1, 100), impostor, dataset="d", date="x")
    calibration = {"operating_points": points, "identify_operating_points": openset.identify_points(),
                   "fmr_ladder": openset.fmr_ladder(openset.ImpostorTail.fit(impostor))}
    entry = calibrate.model_entry(calibration, "fmr_1e-2")
    with pytest.raises(ValueError):
        calibrate.model_entry(calibration, "fmr_1e-3")  # 5,000 impostors cannot back FMR 1e-3
    calibrate.write_thresholds({"face_embedder": entry}, thresholds)
    data = json.loads(thresholds.read_text())
    assert data["face_embedder"] == entry and data["face_embedder_dlib"] == {"keep": 1}
    assert data["face_embedder"]["operating_points"]["fmr_1e-2"]["impostor_pairs"] == 5000
    updated = calibrate.update_manifests(repo, "face_embedder", entry, "def")
    assert updated == [repo / "face_embedder" / "2" / "manifest.json"]
    manifest = json.loads(updated[0].read_text())
    assert manifest["default_operating_point"] == "fmr_1e-2" and manifest["thresholds"] == points
    assert manifest["default_identify_operating_point"] == "fpir_1e-2"
    assert manifest["fmr_ladder"] == calibration["fmr_ladder"]
    assert json.loads((repo / "face_embedder" / "1" / "manifest.json").read_text())["thresholds"] == {}


# --------------------------------------------------------------------------------------------------------
# end to end through the real Triton


@pytest.mark.triton
@pytest.mark.lfw
def test_lfw_pairs_through_triton(triton, lfw_dir: Path, tmp_path: Path) -> None:
    """24 LFW pairs (4 DevTrain, 20 DevTest) through face_pipeline with both embedders, then a cached rerun."""
    data = tmp_path / "lfw"
    data.mkdir()
    (data / "images").symlink_to(lfw_dir / "images")  # images are read in place, never copied
    train = parse_pairs((lfw_dir / "pairsDevTrain.txt").read_text()).pairs
    test = parse_pairs((lfw_dir / "pairsDevTest.txt").read_text()).pairs
    (data / "pairsDevTrain.txt").write_text(format_pairs(train[:2] + train[1100:1102]))
    (data / "pairsDevTest.txt").write_text(format_pairs(test[:10] + test[500:510]))
    args = ["--data", str(data), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--embedders", "sface", "dlib"]
    assert main([*args, "--triton-url", triton.grpc_url]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("sface", "dlib"):
        r = results["embedders"][name]
        assert r["images"]["images"] == len(LfwFolder.open(data).images())
        assert r["embedding_run"]["computed"] == r["images"]["images"]
        assert r["images"]["fte"] == 0 and r["images"]["errors"] == 0
        v1 = r["verification"]["view1"]
        assert v1["dev_test"]["genuine"] == v1["dev_test"]["impostors"] == 10
        assert v1["dev_test"]["auc"] >= 0.95 and v1["dev_test_accuracy"] >= 0.85
        assert r["identification"]["gallery"] > 0
    # Every image is cached now: a rerun starts no Triton (no URL given) and gives the same numbers.
    assert main(args) == 0
    rerun = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("sface", "dlib"):
        assert rerun["embedders"][name]["embedding_run"]["cached"] == results["embedders"][name]["images"]["images"]
        assert rerun["embedders"][name]["verification"] == results["embedders"][name]["verification"]
