"""Run Locust headless as a subprocess (gevent monkey-patches whatever imports it) and collect its files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.mix import DEFAULT_MIX

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STOP_TIMEOUT_S = 15  # users finish their in-flight task at the end (counted), then are stopped
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str | float) -> float:
    """"90", "90s", "2m", "1h", "1m30s" -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (e.g. 60s, 2m, 1m30s)")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


@dataclass
class LocustRun:
    url: str
    api_key: str
    out_dir: Path
    duration_s: float = 60.0
    users: int = 5
    shape: str = "steady"
    shape_factor: float = 0.0
    mix: str = DEFAULT_MIX
    gallery: str = "loadtest"
    rps: float = 0.0
    bad_fraction: float = 0.05
    ramp_s: float | None = None  # None: the shape's default
    extra_args: list[str] = field(default_factory=list)

    @property
    def stats_csv(self) -> Path:
        return self.out_dir / "locust_stats.csv"

    @property
    def failures_csv(self) -> Path:
        return self.out_dir / "locust_failures.csv"

    @property
    def html(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def log(self) -> Path:
        return self.out_dir / "locust.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", self.url,
                "--users", str(self.users), "--run-time", f"{max(1, round(self.duration_s))}s",
                "--stop-timeout", str(STOP_TIMEOUT_S),
                "--csv", str(self.out_dir / "locust"), "--csv-full-history", "--html", str(self.html),
                "--only-summary", "--exit-code-on-error", "0",
                "--shape", self.shape, "--shape-factor", str(self.shape_factor), "--mix", self.mix,
                "--gallery", self.gallery, "--rps", str(self.rps), "--bad-fraction", str(self.bad_fraction),
                *(["--ramp-s", str(self.ramp_s)] if self.ramp_s is not None else []), *self.extra_args]

    def run(self) -> int:
        """Run to completion (bounded: the run time + stop timeout + a start-up allowance); Locust's exit code."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The key travels in the environment, not argv (argv is world-readable in ps); stray LOCUST_* settings
        # of the caller's shell must not change the run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        env["LOADTEST_API_KEY"] = self.api_key
        limit = self.duration_s + STOP_TIMEOUT_S + 90
        with self.log.open("wb") as log:
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                return proc.wait(limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"locust did not finish within {limit:.0f} s (log: {self.log})") from None
            except BaseException:  # Ctrl-C: its own session does not get the signal, so stop it here
                proc.kill()
                proc.wait()
                raise

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
