"""Decision thresholds: the embedder manifest's operating points, and the bounds a request may override within.

The manifest (`model_repository/<model>/<version>/manifest.json`, written by `python -m export`) carries
`thresholds` ({"fmr_1e-3": {"threshold": t, "impostor_pairs": n}, ...}) and `default_operating_point`.
Where the gateway runs without the model repository (its own container), `export/thresholds.json` (the
committed source the manifests are built from) stands in.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ApiError

log = logging.getLogger("gateway")

EMBEDDER_MODELS = {"sface": "face_embedder", "dlib": "face_embedder_dlib"}



def embedder_name(model: str) -> str:
    """'face_embedder' -> 'sface' (the name requests use)."""
    return next((name for name, m in EMBEDDER_MODELS.items() if m == model), model)


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

    def as_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "fmr": self.fmr, "calibrated": self.calibrated,
                "source": self.source}


@dataclass(frozen=True)
class ModelPoints:
    points: dict[str, dict]
    default: str
    bounds: tuple[float, float]


def _fmr(name: str, entry: dict) -> float | None:
    if isinstance(entry.get("fmr"), int | float):
        return float(entry["fmr"])
    match = _FMR_NAME.match(name)
    return float(match.group(1)) if match else None


class OperatingPoints:
    def __init__(self, repository: Path, fallback: Path | None = None) -> None:
        self.repository = repository
        self.fallback = fallback or Path(__file__).resolve().parent.parent / "export" / "thresholds.json"
        self._cache: dict[str, ModelPoints] = {}

    def _load(self, model: str, version: str) -> ModelPoints:
        manifest = self.repository / model / version / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
            points, default = data.get("thresholds") or {}, data.get("default_operating_point")
        except (OSError, ValueError):
            points, default, data = {}, None, {}
        if not points or default not in points:
            try:
                data = json.loads(self.fallback.read_text()).get(model, {})
                points, default = data.get("operating_points", {}), data.get("default_operating_point")
            except (OSError, ValueError):
                points, default = {}, None
            log.info("operating points of %s:%s from %s", model, version, self.fallback)
        if not points or default not in points:
            raise ApiError("backend_unavailable", f"no operating point is configured for {model}:{version} "
                           "(manifest.json or export/thresholds.json)", retry_after=60)
        # An override may not be looser than the loosest calibrated operating point: below it the
        # false-match rate was never measured.
        calibrated = [float(p["threshold"]) for p in points.values() if "impostor_pairs" in p]
        default_bounds = DEFAULT_BOUNDS.get(model, (0.0, 1.0))
        bounds = tuple(data.get("threshold_bounds")
                       or ((min(calibrated), default_bounds[1]) if calibrated else default_bounds))
        return ModelPoints(points, default, (float(bounds[0]), float(bounds[1])))

    def model(self, model: str, version: str) -> ModelPoints:
        key = f"{model}:{version}"
        if key not in self._cache:
            self._cache[key] = self._load(model, version)
        return self._cache[key]

    def decide(self, model: str, version: str, *, name: str | None = None,
               threshold: float | None = None) -> Decision:
        """The threshold to apply: a request's override, a named operating point, or the model default."""
        points = self.model(model, version)
        if threshold is not None:
            lo, hi = points.bounds
            if not lo <= threshold <= hi:
                raise ApiError("validation_error", f"threshold {threshold} is outside [{lo}, {hi}] for {model}")
            return Decision(float(threshold), "custom", None, False, "request override")
        name = name or points.default
        if name not in points.points:
            raise ApiError("validation_error", f"unknown operating point {name!r} for {model}; "
                           f"choose one of {sorted(points.points)}")
        entry = points.points[name]
        fmr = _fmr(name, entry)
        return Decision(float(entry["threshold"]), name, fmr, fmr is not None and "impostor_pairs" in entry,
                        entry.get("source"))
