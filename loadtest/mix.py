"""Endpoint names and the traffic mix ("verify_image=3,identify=3,..."): shared by the runner and the locustfile."""

from __future__ import annotations

# endpoint key -> Locust user class name (in locustfile.py)
ENDPOINTS: dict[str, str] = {
    "verify_image": "VerifyImageUser",
    "verify_subject": "VerifySubjectUser",
    "identify": "IdentifyUser",
    "enrol": "EnrolUser",
    "detect": "DetectUser",
}
# A front-desk style mix: mostly 1:1 and 1:N decisions, some detection, a little enrolment.
DEFAULT_MIX = "verify_image=3,verify_subject=2,identify=3,enrol=1,detect=1"


def parse_mix(text: str) -> dict[str, int]:
    """"a=3,b=1" or a bare "a" (weight 1) -> {endpoint: weight}; weight 0 removes an endpoint."""
    mix: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, _, weight = part.partition("=")
        key = key.strip()
        if key not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {key!r} in mix (known: {', '.join(ENDPOINTS)})")
        try:
            value = int(weight) if weight.strip() else 1
        except ValueError:
            raise ValueError(f"weight of {key!r} must be an integer, got {weight!r}") from None
        if value < 0:
            raise ValueError(f"weight of {key!r} must be >= 0")
        mix[key] = value
    mix = {k: v for k, v in mix.items() if v > 0}
    if not mix:
        raise ValueError(f"the mix {text!r} selects no endpoint")
    return mix
