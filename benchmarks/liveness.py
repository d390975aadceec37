"""`python -m benchmarks.liveness`: the liveness challenge on LFW View 1 (docs/liveness.md).

1. Genuine attempts: for people with several photos, a challenge's frames are the person's own photos whose
   measured yaw/pitch change from the first frame shows the asked movement (what a person following the
   instruction gives), judged by the gateway's very rule (gateway.liveness.evaluate) with the settings'
   thresholds. Photos of one person come from different days, so the identity check is stricter here than
   in one live session. A cross-check picks the frames by landmark geometry instead (the nose tip moved
   sideways by `--turn` eye distances, or up/down by `--tilt` of the eye-mouth distance), independent of
   the pose solver: it measures how far the solver agrees with a plain geometric reading.
2. Still-photo replays: each frame is the same photo, re-encoded, rescaled or shifted (what a camera filming a
   print held still gives). These must never pass.
3. Tilted prints: the photo perspective-warped as a flat print turned about its vertical or horizontal axis,
   reported (a flat print's nose does not move relative to its eyes, so the pose barely changes).

The pipeline runs in process (the same FacePipeline code Triton runs). Prints a table and writes JSON
(default docs/bench/liveness.json). People are split by name into the two View 1 halves: `--people train`
(DevTrain's, where the thresholds were chosen) or `test` (DevTest's, held out) or `all`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facestack.accuracy.dataset import VIEW1_TEST, VIEW1_TRAIN, read_pairs
from facestack.pipeline import choice
from facestack.pipeline.faces import FacePipeline, Options
from facestack.pipeline.runtime import InProcessModels, embedder_specs
from facestack.settings import REPO_ROOT, get_settings
from facestack.triton.model_config import pipeline_parameters
from gateway import liveness
from gateway.operating_points import OperatingPoints


@dataclass(frozen=True)
class Measured:
    frame: liveness.Frame
    gy: float  # nose tip right of the eyes' midpoint, in eye distances (> 0: turned to the person's left)
    gp: float  # nose tip below the eyes, as a share of the eye-mouth distance (grows looking down)


def geometry(landmarks: np.ndarray) -> tuple[float, float]:
    eyes_mid, mouth_mid = (landmarks[0] + landmarks[1]) / 2, (landmarks[3] + landmarks[4]) / 2
    eyes = float(np.linalg.norm(landmarks[1] - landmarks[0])) or 1.0
    down = float(mouth_mid[1] - eyes_mid[1]) or 1.0
    return float(landmarks[2, 0] - eyes_mid[0]) / eyes, float(landmarks[2, 1] - eyes_mid[1]) / down


class Runner:
    def __init__(self, repository: Path, min_face_size: float) -> None:
        specs, self.versions = embedder_specs(repository)
        models = InProcessModels(repository, specs, 2)
        self.pipeline = FacePipeline(models.detect, models.embed, specs, pipeline_parameters(repository))
        self.min_face_size = min_face_size

    def measure(self, images: list[bytes]) -> list[Measured | None]:
        out: list[Measured | None] = []
        for start in range(0, len(images), 8):
            batch = images[start:start + 8]
            for data, faces in zip(batch, self.pipeline.run(batch, [Options()] * len(batch)), strict=True):
                if not hasattr(faces, "boxes"):
                    out.append(None)
                    continue
                usable = [i for i in range(len(faces.scores)) if faces.quality[i, 0] >= self.min_face_size]
                if not usable:
                    out.append(Measured(liveness.Frame(liveness.digest(data), 0), 0.0, 0.0))
                    continue
                # LFW photos often show a second person at the edge: the photo's subject is the centred face
                # (the gateway would call such a frame multiple_faces; here one face per photo is the premise)
                i = usable[choice.choose(faces.boxes[usable], faces.image_size, "centre")[0]]
                _, _, yaw, pitch, roll, _ = (float(v) for v in faces.quality[i])
                frame = liveness.Frame(liveness.digest(data), 1, yaw, pitch, roll,
                                       faces.landmarks[i].astype(np.float64), faces.embeddings[i])
                out.append(Measured(frame, *geometry(faces.landmarks[i])))
        return out


def shows(m: Measured, base: Measured, action: str, turn: float, tilt: float) -> bool:
    """The landmarks show `action` relative to `base`: the asked axis moved past its margin, the other less."""
    dx, dy = (m.gy - base.gy) / turn, (m.gp - base.gp) / tilt
    axis, sign = liveness.MOVES[action]
    moved, other = (dx, dy) if axis == "yaw" else (dy, dx)
    return sign * moved >= 1.0 and abs(other) < abs(moved)


def genuine(people: dict[str, list[Measured]], th: liveness.Thresholds, turn: float, tilt: float,
            per_person: int, rng: random.Random, select: str = "pose") -> dict:
    """select "pose": a frame fits a step when its measured yaw/pitch change shows it (what a person following
    the instruction gives: this measures the rest of the rule, identity across photos above all); "geometry":
    when the landmark geometry shows it (a cross-check of the pose solver itself)."""

    def fits_step(m: Measured, base: Measured, action: str) -> bool:
        if select == "pose":
            return liveness.classify(m.frame, base.frame, th) == action
        return shows(m, base, action, turn, tilt)

    built, outcomes, unbuildable = 0, Counter(), 0
    for name in sorted(people):
        photos = [m for m in people[name] if m is not None and m.frame.faces == 1]
        for _ in range(per_person):
            actions = liveness.new_actions(rng)
            if len(photos) < len(actions) + 1:
                unbuildable += 1
                continue
            sequence = None
            for base in rng.sample(photos, len(photos)):
                chosen, used = [base], {base.frame.digest}
                for action in actions:
                    fits = [m for m in photos if m.frame.digest not in used and fits_step(m, base, action)]
                    if not fits:
                        break
                    pick = rng.choice(fits)
                    chosen.append(pick)
                    used.add(pick.frame.digest)
                if len(chosen) == len(actions) + 1:
                    sequence = chosen
                    break
            if sequence is None:
                unbuildable += 1
                continue
            built += 1
            outcomes[liveness.evaluate(actions, [m.frame for m in sequence], th).reason] += 1
    live = outcomes["all_steps"]
    return {"attempts": built, "live": live, "pass_rate": live / built if built else None,
            "reasons": dict(outcomes), "challenges_not_buildable": unbuildable}


def variants(data: bytes, rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """(still: re-encoded, rescaled, shifted copies; tilted: a flat print turned about an axis) of one photo."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]

    def jpeg(img: np.ndarray, quality: int) -> bytes:
        return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()

    still = [jpeg(image, q) for q in (95, 85, 75)]
    for scale in (0.9, 1.1):
        still.append(jpeg(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), 90))
    for dx, dy in ((6, 0), (0, 6), (-5, -5)):
        still.append(jpeg(cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h),
                                         borderMode=cv2.BORDER_REFLECT), 90))
    rng.shuffle(still)
    tilted = []
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    for axis, degrees in (("v", 25), ("v", -25), ("v", 40), ("v", -40), ("h", 25), ("h", -25)):
        # a flat print turned by `degrees` about its vertical (v) or horizontal (h) middle line, seen from about
        # three print-widths away: the near edge grows, the far one shrinks, the turned axis is foreshortened
        c, s, dist = np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 3.0
        out = []
        for x, y in corners:
            u, v = (x - w / 2) / w, (y - h / 2) / h
            if axis == "v":
                x3, z = u * c, u * s
                y3 = v
            else:
                y3, z = v * c, v * s
                x3 = u
            f = dist / (dist + z)
            out.append([w / 2 + x3 * f * w, h / 2 + y3 * f * h])
        matrix = cv2.getPerspectiveTransform(corners, np.float32(out))
        tilted.append(jpeg(cv2.warpPerspective(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT), 90))
    return still, tilted


def replays(frames_of: list[list[Measured | None]], th: liveness.Thresholds, tries: int,
            rng: random.Random) -> dict:
    attempts, outcomes, jitter = 0, Counter(), []
    for frames in frames_of:
        usable = [m for m in frames if m is not None]
        if len(usable) < 4:
            continue
        base = usable[0].frame
        jitter += [max(abs(m.frame.yaw - base.yaw), abs(m.frame.pitch - base.pitch)) for m in usable[1:]]
        for _ in range(tries):
            actions = liveness.new_actions(rng)
            sequence = rng.sample(usable, min(len(usable), 2 * len(actions) + 1))
            attempts += 1
            outcomes[liveness.evaluate(actions, [m.frame for m in sequence], th).reason] += 1
    live = outcomes["all_steps"]
    return {"attempts": attempts, "live": live, "pass_rate": live / attempts if attempts else None,
            "reasons": dict(outcomes),
            "pose_change_deg": {"p50": float(np.percentile(jitter, 50)) if jitter else None,
                                "p99": float(np.percentile(jitter, 99)) if jitter else None,
                                "max": float(max(jitter)) if jitter else None}}


def names(root: Path, which: str) -> set[str]:
    found = set()
    for file in ([VIEW1_TRAIN] if which == "train" else [VIEW1_TEST] if which == "test" else
                 [VIEW1_TRAIN, VIEW1_TEST]):
        found |= {ref.name for ref in read_pairs(root / file).images()}
    return found


def run(root: Path, which: str, *, per_person: int, turn: float, tilt: float, replay_photos: int,
        seed: int, repository: Path) -> dict:
    settings = get_settings()
    rng = random.Random(seed)
    runner = Runner(repository, settings.gateway_min_face_size)
    model, _, version = runner.versions[settings.gateway_default_embedder].partition(":")
    identity = OperatingPoints(repository).decide(model, version, name=settings.gateway_liveness_identity_point)
    th = liveness.Thresholds(settings.gateway_liveness_yaw_deg, settings.gateway_liveness_pitch_deg,
                             identity.threshold)
    wanted = names(root, which)
    folders = sorted(p for p in (root / "images").iterdir() if p.name in wanted and len(list(p.glob("*.jpg"))) >= 3)
    started = time.perf_counter()
    people: dict[str, list[Measured]] = {}
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))
        people[folder.name] = runner.measure([f.read_bytes() for f in files])  # type: ignore[assignment]
    result_genuine = genuine(people, th, turn, tilt, per_person, rng, "pose")
    cross_check = genuine(people, th, turn, tilt, per_person, random.Random(seed), "geometry")
    photos = [f for folder in rng.sample(folders, min(replay_photos, len(folders)))
              for f in sorted(folder.glob("*.jpg"))[:1]]
    still_frames, tilted_frames = [], []
    for f in photos:
        still, tilted = variants(f.read_bytes(), rng)
        measured_still = runner.measure([f.read_bytes(), *still])
        still_frames.append(measured_still)
        tilted_frames.append(measured_still[:1] + runner.measure(tilted))
    return {
        "date": time.strftime("%Y-%m-%d"), "dataset": f"LFW View 1 ({root.name}), people of {which} with >= 3 photos",
        "people": len(folders), "images": sum(len(v) for v in people.values()),
        "thresholds": {"yaw_deg": th.yaw_deg, "pitch_deg": th.pitch_deg, "identity": th.identity,
                       "identity_operating_point": settings.gateway_liveness_identity_point},
        "selection": {"turn_eye_distances": turn, "tilt_eye_mouth_share": tilt},
        "genuine": result_genuine,
        "genuine_geometry_cross_check": cross_check,
        "still_photo_replay": replays(still_frames, th, 3, rng),
        "tilted_print_replay": replays(tilted_frames, th, 3, rng),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python -m benchmarks.liveness " + " ".join(sys.argv[1:]),
    }


def table(result: dict) -> str:
    rows = [("attempt", "attempts", "live", "pass rate", "reasons")]
    for key in ("genuine", "genuine_geometry_cross_check", "still_photo_replay", "tilted_print_replay"):
        r = result[key]
        rate = "-" if r["pass_rate"] is None else f"{100 * r['pass_rate']:.1f} %"
        rows.append((key, str(r["attempts"]), str(r["live"]), rate,
                     ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items()))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    th = result["thresholds"]
    lines.append(f"thresholds: yaw {th['yaw_deg']} deg, pitch {th['pitch_deg']} deg, identity cosine "
                 f"{th['identity']} ({th['identity_operating_point']}); still-photo pose change p99 "
                 f"{result['still_photo_replay']['pose_change_deg']['p99']:.1f} deg, max "
                 f"{result['still_photo_replay']['pose_change_deg']['max']:.1f}; genuine challenges not buildable "
                 f"from the photos: {result['genuine']['challenges_not_buildable']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.liveness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=REPO_ROOT.parent / "shared" / "datasets" / "lfw-view1")
    parser.add_argument("--people", choices=("train", "test", "all"), default="all")
    parser.add_argument("--per-person", type=int, default=5, help="random challenges tried per person")
    parser.add_argument("--turn", type=float, default=0.2, help="nose sideways, eye distances (frame choice)")
    parser.add_argument("--tilt", type=float, default=0.12, help="nose up/down, share of eye-mouth (frame choice)")
    parser.add_argument("--replay-photos", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench" / "liveness.json")
    args = parser.parse_args(argv)
    result = run(args.lfw, args.people, per_person=args.per_person, turn=args.turn, tilt=args.tilt,
                 replay_photos=args.replay_photos, seed=args.seed, repository=get_settings().model_repository)
    print(table(result))
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

