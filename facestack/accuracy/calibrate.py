"""Thresholds per embedder for named false-match-rate operating points, and where they are written.

Thresholds come from every cross-identity pair of the calibration images (LFW View 1 DevTrain: 3,443 images,
about 5.9 million impostor comparisons), not from the 1,100 impostor pairs of the pairs file, which cannot
resolve FMR 1e-3. An operating point is published only when at least `MIN_FALSE_MATCHES` impostor comparisons
may reach it (fmr * impostors >= 10), so each threshold rests on that many scores at least. Impostor pairs
share images (each image meets some 3,400 others), so they are not independent: the counts overstate the
evidence, and the held-out check (the same thresholds on the DevTest images, disjoint identities) is the
honest measure of how well a threshold holds its FMR.

The same embeddings give the same thresholds: scores are computed in float64 and each threshold is a short
decimal strictly between two impostor scores (metrics.threshold_at_fmr).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facestack.accuracy import metrics, openset
from facestack.settings import THRESHOLDS_FILE

FMRS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
MIN_FALSE_MATCHES = 10
DEFAULT_OPERATING_POINT = "fmr_1e-3"
SOURCE = "calibrated by `python -m facestack.accuracy --calibrate` (docs/accuracy.md)"


def point_name(fmr: float) -> str:
    """1e-3 -> 'fmr_1e-3' (the names the gateway parses)."""
    exponent = -math.log10(fmr)
    if abs(exponent - round(exponent)) < 1e-9:
        return f"fmr_1e-{round(exponent)}"
    return f"fmr_{fmr:g}"


def operating_points(genuine: np.ndarray, impostor: np.ndarray, *, dataset: str, date: str,
                     fmrs: Sequence[float] = FMRS, heldout: tuple[np.ndarray, np.ndarray] | None = None,
                     heldout_dataset: str | None = None) -> dict[str, dict]:
    """{name: entry} for every FMR the impostor count supports; `heldout` (genuine, impostor) adds what the
    same threshold gives on other data."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    points = {}
    for fmr in fmrs:
        if fmr * len(impostor) < MIN_FALSE_MATCHES:
            continue
        threshold, false_matches = metrics.threshold_at_fmr(impostor, fmr)
        entry = {
            "threshold": threshold, "metric": "cosine", "fmr": fmr,
            "impostor_pairs": len(impostor), "false_matches": false_matches,
            "measured_fmr": false_matches / len(impostor),
            "tar": float((genuine >= threshold).mean()), "genuine_pairs": len(genuine),
            "dataset": dataset, "date": date, "source": SOURCE,
        }
        if heldout is not None:
            g, i = (np.asarray(a, dtype=np.float64) for a in heldout)
            entry["heldout"] = {"dataset": heldout_dataset, "fmr": float((i >= threshold).mean()),
                                "false_matches": int((i >= threshold).sum()), "impostor_pairs": len(i),
                                "tar": float((g >= threshold).mean()), "genuine_pairs": len(g)}
        points[point_name(fmr)] = entry
    return points


def model_entry(calibration: dict, default: str = DEFAULT_OPERATING_POINT,
                default_identify: str = openset.DEFAULT_IDENTIFY_POINT) -> dict:
    """What facestack/thresholds.json keeps of one embedder's calibration (evaluate.calibration's result)."""
    points, identify = calibration["operating_points"], calibration.get("identify_operating_points") or {}
    if default not in points:
        raise ValueError(f"default operating point {default!r} is not among the calibrated ones {sorted(points)}")
    entry = {"default_operating_point": default, "operating_points": points}
    if identify:
        if default_identify not in identify:
            raise ValueError(f"default identify point {default_identify!r} is not among {sorted(identify)}")
        entry.update({"fmr_ladder": calibration["fmr_ladder"], "default_identify_operating_point": default_identify,
                      "identify_operating_points": identify})
    return entry


def _write_json(path: Path, data: dict) -> None:
    """Atomic replace, so a reader (a gateway reloading) never sees half a file."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


def write_thresholds(entries: dict[str, dict], path: Path = THRESHOLDS_FILE) -> None:
    """Merge {model: entry} into facestack/thresholds.json (other models' entries are kept)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    _write_json(path, data)


def update_manifests(repository: Path, model: str, entry: dict, model_sha256: str) -> list[Path]:
    """Set `thresholds` and `default_operating_point` in place in every exported version of `model` whose
    weights are the ones measured (output.sha256 == model_sha256); other versions are left alone."""
    updated = []
    for manifest_path in sorted(Path(repository).glob(f"{model}/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("output", {}).get("sha256") != model_sha256:
            continue
        manifest["thresholds"] = entry["operating_points"]
        manifest["default_operating_point"] = entry["default_operating_point"]
        if "identify_operating_points" in entry:
            manifest["fmr_ladder"] = entry["fmr_ladder"]
            manifest["identify_thresholds"] = entry["identify_operating_points"]
            manifest["default_identify_operating_point"] = entry["default_identify_operating_point"]
        _write_json(manifest_path, manifest)
        updated.append(manifest_path)
    return updated
