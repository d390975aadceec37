"""Decision thresholds: the embedder manifest's operating points, and the bounds a request may override within.

The manifest (`model_repository/<model>/<version>/manifest.json`, written by `python -m export`) carries
1:1 points `thresholds` ({"fmr_1e-3": {"threshold": t, "impostor_pairs": n}, ...}, `default_operating_point`),
`fmr_ladder` (thresholds at FMR 0.5 ... 1e-12) and 1:N points `identify_thresholds` ({"fpir_1e-2": {"fpir": f}},
`default_identify_operating_point`). A search over N templates, identify's or verify's against a subject with
N templates, is a best-of-N: its threshold is the ladder's at the per-comparison FMR that keeps the stated rate
for N comparisons (FPIR(N, t) = 1 - (1 - FMR(t))^N, facestack.accuracy.openset). Where the gateway runs
without the model repository (its own container), `facestack/thresholds.json` (the committed source the
manifests are built from) stands in.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from facestack.accuracy import openset
from facestack.settings import THRESHOLDS_FILE
from gateway.errors import ApiError

log = logging.getLogger("gateway")

# A request's threshold override must stay inside these (cosine) when no calibrated operating point exists
# (with calibration the floor is the loosest calibrated threshold). Below the floor nearly any two faces
# match (SFace impostors reach about 0.3, dlib's about 0.9 on LFW); above the ceiling almost nothing does.
# The manifest may set them with "threshold_bounds": [lo, hi].
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "face_embedder": (0.3, 0.95),
    "face_embedder_dlib": (0.9, 0.99),
}
_FMR_NAME = re.compile(r"^fmr_([0-9.]+e-?[0-9]+|0?\.[0-9]+)$")


@dataclass(frozen=True)
class Decision:
    threshold: float
    name: str
    fmr: float | None
    calibrated: bool
    source: str | None
    fpir: float | None = None  # identify: the false-positive identification rate stated for gallery_size
    gallery_size: int | None = None  # identify: templates the threshold was computed for

    def as_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "fmr": self.fmr, "calibrated": self.calibrated,
                "source": self.source, "fpir": self.fpir, "gallery_size": self.gallery_size}


@dataclass(frozen=True)
class ModelPoints:
    points: dict[str, dict]
    default: str
    bounds: tuple[float, float]
    identify: dict[str, dict]
    identify_default: str | None
    ladder: list[dict]


def _fmr(name: str, entry: dict) -> float | None:
    if isinstance(entry.get("fmr"), int | float):
        return float(entry["fmr"])
    match = _FMR_NAME.match(name)
    return float(match.group(1)) if match else None


class OperatingPoints:
    def __init__(self, repository: Path, fallback: Path | None = None) -> None:
        self.repository = repository
        self.fallback = fallback or THRESHOLDS_FILE
        self._cache: dict[str, ModelPoints] = {}

    def _load(self, model: str, version: str) -> ModelPoints:
        manifest = self.repository / model / version / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            data = {}
        points, default = data.get("thresholds") or {}, data.get("default_operating_point")
        identify, identify_default = data.get("identify_thresholds") or {}, data.get("default_identify_operating_point")
        ladder = data.get("fmr_ladder") or []
        # Each part (1:1 points; 1:N points with their ladder) comes whole from the manifest or from the fallback.
        if not points or default not in points or identify_default not in identify or not ladder:
            try:
                committed = json.loads(self.fallback.read_text()).get(model, {})
            except (OSError, ValueError):
                committed = {}
            if not points or default not in points:
                data = committed
                points, default = committed.get("operating_points", {}), committed.get("default_operating_point")
            if identify_default not in identify or not ladder:
                identify = committed.get("identify_operating_points", {})
                identify_default = committed.get("default_identify_operating_point")
                ladder = committed.get("fmr_ladder", [])
            log.info("operating points of %s:%s (partly) from %s", model, version, self.fallback)
        if not points or default not in points:
            raise ApiError("backend_unavailable", f"no operating point is configured for {model}:{version} "
                           "(manifest.json or facestack/thresholds.json)", retry_after=60)
        # An override may not be looser than the loosest calibrated operating point: below it the
        # false-match rate was never measured.
        calibrated = [float(p["threshold"]) for p in points.values() if "impostor_pairs" in p]
        default_bounds = DEFAULT_BOUNDS.get(model, (0.0, 1.0))
        bounds = tuple(data.get("threshold_bounds")
                       or ((min(calibrated), default_bounds[1]) if calibrated else default_bounds))
        return ModelPoints(points, default, (float(bounds[0]), float(bounds[1])), identify, identify_default,
                          ladder)

    def model(self, model: str, version: str) -> ModelPoints:
        key = f"{model}:{version}"
        if key not in self._cache:
            self._cache[key] = self._load(model, version)
        return self._cache[key]

    @staticmethod
    def _override(points: ModelPoints, model: str, threshold: float) -> Decision:
        lo, hi = points.bounds
        if not lo <= threshold <= hi:
            raise ApiError("validation_error", f"threshold {threshold} is outside [{lo}, {hi}] for {model}")
        return Decision(float(threshold), "custom", None, False, "request override")

    def decide(self, model: str, version: str, *, name: str | None = None, threshold: float | None = None,
               templates: int = 1) -> Decision:
        """1:1: a request's override, a named FMR operating point, or the model default. Against a subject with
        `templates` templates the best similarity counts, so the threshold is the one at which that best-of-k
        comparison keeps the point's FMR (the `fmr` the answer states is that effective rate)."""
        points = self.model(model, version)
        if threshold is not None:
            return self._override(points, model, threshold)
        name = name or points.default
        if name not in points.points:
            raise ApiError("validation_error", f"unknown operating point {name!r} for {model}; "
                           f"choose one of {sorted(points.points)}")
        entry = points.points[name]
        fmr = _fmr(name, entry)
        calibrated = fmr is not None and "impostor_pairs" in entry
        value = float(entry["threshold"])
        if templates > 1 and fmr is not None and points.ladder:
            value, ladder_calibrated = openset.threshold_at(points.ladder, openset.fmr_for(fmr, templates))
            calibrated = calibrated and ladder_calibrated
        return Decision(value, name, fmr, calibrated, entry.get("source"))

    def decide_identify(self, model: str, version: str, gallery_size: int, *, name: str | None = None,
                        threshold: float | None = None) -> Decision:
        """1:N over `gallery_size` templates: an override, or a named FPIR point's threshold for that size."""
        points = self.model(model, version)
        if threshold is not None:
            return self._override(points, model, threshold)
        if not points.identify or points.identify_default not in points.identify or not points.ladder:
            raise ApiError("backend_unavailable", f"no identify operating point is configured for {model}:{version} "
                           "(run `make eval`)", retry_after=60)
        name = name or points.identify_default
        if name not in points.identify:
            hint = " (fmr_* points are per comparison, for 1:1 verify)" if name in points.points else ""
            raise ApiError("validation_error", f"unknown identify operating point {name!r} for {model}{hint}; "
                           f"choose one of {sorted(points.identify)}")
        entry = points.identify[name]
        row = openset.identify_threshold(points.ladder, float(entry["fpir"]), max(1, gallery_size))
        return Decision(row["threshold"], name, row["fmr"], row["calibrated"],
                        entry.get("source", "calibrated by `make eval` (docs/accuracy.md)"),
                        fpir=float(entry["fpir"]), gallery_size=max(1, gallery_size))
