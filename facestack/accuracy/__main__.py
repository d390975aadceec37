"""`python -m facestack.accuracy --data DIR`: a folder in LFW layout through the real Triton pipeline.

Writes `<out>/results.json` (every number, per embedder) and `<out>/roc_det.png`, prints a summary, and with
`--calibrate` writes the operating points into facestack/thresholds.json and, in place, into the manifests of the
exported embedders that were measured. Without `--triton-url` a local Triton (facestack.triton.launcher) is
started, only if some image is not in the embedding cache yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from facestack.accuracy import calibrate, embed, evaluate, metrics, plots
from facestack.accuracy.dataset import LfwFolder
from facestack.settings import REPO_ROOT, get_settings
from facestack.triton.model_config import pipeline_parameters


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m facestack.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder in LFW layout with pairs files")
    served = list(pipeline_parameters().embedders)  # face_pipeline's config: sface, dlib
    parser.add_argument("--embedders", nargs="+", default=served, choices=served)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "accuracy", help="results folder")
    parser.add_argument("--calibrate", action="store_true",
                        help="write the operating points to facestack/thresholds.json and the manifests")
    parser.add_argument("--default-operating-point", default=calibrate.DEFAULT_OPERATING_POINT)
    parser.add_argument("--face", choices=embed.FACE_CHOICES, default="main",
                        help="which face of a multi-face image to use (default: main, the gateway's rule)")
    parser.add_argument("--holdout-share", type=float, default=evaluate.HOLDOUT_SHARE,
                        help="share of identities left out of the gallery as non-mated probes")
    parser.add_argument("--triton-url", help="gRPC address of a running Triton (default: start one locally)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to Triton")
    parser.add_argument("--cache-dir", type=Path, default=embed.DEFAULT_CACHE_DIR)
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: settings)")
    parser.add_argument("--thresholds", type=Path, default=calibrate.THRESHOLDS_FILE)
    return parser.parse_args(argv)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def summary_lines(name: str, result: dict) -> list[str]:
    images = result["images"]
    lines = [f"== {name} ({result['model']}), face choice: {result['face_choice']}",
             f"   images {images['images']}, failure to enrol (no face) {images['fte']}, errors {images['errors']}, "
             f"multi-face {images['multi_face']} (centre != largest in {images['centre_differs_from_largest']})"]
    v = result["verification"]
    if "view1" in v:
        v1 = v["view1"]
        te, allp = v1["dev_test"], v1["dev_test_all_pairs"]
        lines.append(f"   View 1 DevTest accuracy {_pct(v1['dev_test_accuracy'])} at threshold {v1['threshold']:.4f} "
                     f"(DevTrain {_pct(v1['dev_train_accuracy'])}); FTE pairs {v1['fte_pairs']['dev_test']}")
        lines.append(f"   DevTest pairs: AUC {te['auc']:.5f}, EER {_pct(te['eer'])}, "
                     + ", ".join(f"TAR@FAR {k} {_pct(t['tar'])} ({t['impostors']} impostors, "
                                 f"{t['false_accepts_allowed']} false accepts allowed)"
                                 for k, t in te["tar_at_far"].items()))
        lines.append(f"   DevTest all pairs ({allp['genuine']} genuine, {allp['impostors']} impostor): AUC "
                     f"{allp['auc']:.5f}, EER {_pct(allp['eer'])}, "
                     + ", ".join(f"TAR@FAR {k} {_pct(t['tar'])}" for k, t in allp["tar_at_far"].items()))
        alt = v["view1_other_face_choice"]
        lines.append(f"   with the {alt['face_choice']} face instead: "
                     f"DevTest accuracy {_pct(alt['dev_test_accuracy'])}")
    if "view2" in v:
        tf = v["view2"]["ten_fold"]
        lines.append(f"   View 2 10-fold accuracy {_pct(tf['mean'])} +- {_pct(tf['std'])} "
                     f"(SE {_pct(tf['standard_error'])})")
    ident = result["identification"]
    fnir = ident["fnir_at_fpir"]
    lines.append(f"   identification: gallery {ident['gallery']}, mated {ident['mated_probes']}, non-mated "
                 f"{ident['non_mated_probes']}: rank-1 {_pct(ident['rank']['1'])}, rank-5 {_pct(ident['rank']['5'])}, "
                 + ", ".join(f"FNIR@FPIR {k} {_pct(f['fnir'])} ({f['false_alarms_allowed']} false alarms allowed)"
                             for k, f in fnir.items() if f))
    open_set = result.get("open_set")
    if open_set:
        lines.append(f"   identify, held out: gallery {open_set['gallery']}, mated {open_set['mated_probes']}, "
                     f"non-mated {open_set['non_mated_probes']}")
        for name, o in open_set["held_out"].items():
            lines.append(f"     {name}: threshold {o['threshold']} (for {o['gallery_size']} templates, "
                         f"calibrated {o['calibrated']}): unknown {_pct(o['unknown_rate'])} "
                         f"(FPIR {o['false_positives']}/{o['non_mated_probes']}, p {o['p_value_fpir_holds']:.2f}), "
                         f"rank-1 match {_pct(o['rank1_match'])}, wrong subject {_pct(o['wrong_subject'])}")
    for row in (result.get("multi_template") or {}).get("all_images", []):
        lines.append(f"   verify vs {row['k']} templates, {row['rule']}: threshold {row['threshold']:.4f}, "
                     f"TAR {_pct(row['tar'])}, FMR {row['fmr']:.2e} ({row['false_matches']}/{row['impostor']})")
    gates = result.get("quality_gates")
    if gates:
        lines.append("   gates refuse: " + ", ".join(f"{g} {r['images']} ({_pct(r['share'])})"
                                                 for g, r in gates["refused"].items())
                     + f"; any {gates['refused_any']['images']} ({_pct(gates['refused_any']['share'])})")
        pairs = gates.get("dev_test_pairs")
        if pairs:
            lines.append(f"   DevTest at {pairs['threshold']}: genuine pairs refused {pairs['genuine_refused_any']}/"
                         f"{pairs['genuine']}, accuracy all {_pct(pairs['accuracy_all_pairs'])}, accepted "
                         f"{_pct(pairs['accuracy_accepted_pairs'])}")
    for rule, c in (result.get("face_choice_rules") or {}).items():
        lines.append(f"   face choice {rule}: DevTest accuracy {_pct(c.get('dev_test_accuracy'))}, "
                     f"{c['images_choosing_another_face_than_centre']} images differ from centre")
    for point, entry in result["calibration"]["operating_points"].items():
        held = entry.get("heldout")
        lines.append(f"   {point}: threshold {entry['threshold']} (TAR {_pct(entry['tar'])}, "
                     f"{entry['impostor_pairs']} impostor pairs)"
                     + (f"; held out: FMR {held['fmr']:.2e}, TAR {_pct(held['tar'])}" if held else ""))
    return lines


def plot(folder: LfwFolder, faces_by: dict[str, dict], rule: str, path: Path) -> bool:
    if folder.dev_test is not None:
        pairs, refs, label = folder.dev_test.pairs, folder.dev_test.images(), "View 1 DevTest"
    else:
        pf = next(iter(folder.pairs_files().values()))
        pairs, refs, label = pf.pairs, pf.images(), pf.path.name if pf.path else "pairs"
    roc, det = {}, {}
    for name, faces in faces_by.items():
        scores, labels, _ = evaluate.pair_scores(pairs, faces, rule)
        roc[name] = (scores, labels)
        matrix, ok = evaluate._embedding_matrix(refs, faces, rule)
        genuine, impostor = metrics.all_pairs(matrix, [r.name for r in refs], ok)
        det[f"{name} ({len(genuine)} genuine, {len(impostor)} impostor)"] = (
            np.r_[genuine, impostor], np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return plots.roc_det_png(path, {f"ROC, {label} pairs ({len(pairs)})": roc,
                                    f"DET, every pair of the {label} images ({len(refs)})": det},
                             f"facestack through Triton, {folder.root.name}, {rule} face")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    command = "python -m facestack.accuracy " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    date = dt.date.today().isoformat()
    folder = LfwFolder.open(args.data)
    missing = folder.missing()
    if missing:
        print(f"error: {len(missing)} images named by the pairs files are missing, e.g. {folder.path(missing[0])}",
              file=sys.stderr)
        return 2
    refs = folder.images()
    paths = [folder.path(r) for r in refs]
    repository = Path(args.repository or get_settings().model_repository)

    server = None
    url = args.triton_url
    if url is None and any(embed.uncached(paths, e, args.cache_dir, repository) for e in args.embedders):
        from facestack.triton.launcher import TritonServer

        server = TritonServer(repository).start()
        url = server.grpc_url
    results: dict = {"date": date, "command": command, "data": str(folder.root), "face_choice": args.face,
                     "embedders": {}}
    faces_by: dict[str, dict] = {}
    try:
        for name in args.embedders:
            by_path, stats = embed.embed_images(paths, name, url=url, cache_dir=args.cache_dir,
                                                concurrency=args.concurrency, repository=repository)
            faces = {ref: by_path[p] for ref, p in zip(refs, paths, strict=True)}
            faces_by[name] = faces
            fp = embed.fingerprint(name, repository)
            result = {"model": f"{fp['embedder_model']}:{fp['models'][fp['embedder_model']]['version']}",
                      "fingerprint": fp, "embedding_run": {**stats.__dict__,
                                                           "images_per_second": stats.images_per_second,
                                                           "concurrency": args.concurrency}}
            result.update(evaluate.evaluate(folder, faces, args.face, args.holdout_share, date))
            results["embedders"][name] = result
            print("\n".join(summary_lines(name, result)), flush=True)
    finally:
        if server is not None:
            server.stop()

    args.out.mkdir(parents=True, exist_ok=True)
    if plot(folder, faces_by, args.face, args.out / "roc_det.png"):
        print(f"plot: {args.out / 'roc_det.png'}")
    else:
        print("plot skipped: matplotlib is not installed")

    if args.calibrate:
        entries = {}
        for result in results["embedders"].values():
            model = result["fingerprint"]["embedder_model"]
            entries[model] = calibrate.model_entry(result["calibration"], args.default_operating_point)
            sha = result["fingerprint"]["models"][model]["sha256"]
            updated = calibrate.update_manifests(repository, model, entries[model], sha)
            print(f"{model}: operating points written to {len(updated)} manifest(s): "
                  + ", ".join(str(p) for p in updated))
        calibrate.write_thresholds(entries, args.thresholds)
        print(f"thresholds written to {args.thresholds}")
    results["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out / 'results.json'} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
