"""Locust users for the facestack gateway: verify (image vs image, vs an enrolled subject), identify, enrol, detect.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --api-key KEY --gallery loadtest \
           --mix verify_image=3,identify=3 --shape step --users 6 --run-time 120s --headless

Every option below also reads an environment variable (LOADTEST_API_KEY, LOADTEST_GALLERY, LOADTEST_MIX, ...);
`python -m loadtest.run` passes them and seeds the gallery first (subjects "obama" and "biden" plus fillers).

Outcomes: a request succeeds only with its expected status AND the expected answer (a genuine pair matches, an
impostor does not, identify names the right subject), so wrong answers under load count as errors too.
A fraction (--bad-fraction) of requests is deliberately bad (no face, unknown subject, corrupt or unsupported
image) and succeeds only with its documented 4xx and problem code. Anything else (5xx, 429, timeouts,
connection errors) is an error.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import MasterRunner

from loadtest.arrivals import next_wait, schedule
from loadtest.mix import DEFAULT_MIX, ENDPOINTS, parse_mix
from loadtest.payloads import Body, Payloads
from loadtest.shapes import DEFAULT_FACTORS, SHAPES

log = logging.getLogger("loadtest")
PAYLOADS: Payloads | None = None  # built once per process in the init event, shared by its users
Check = Callable[[Any], str | None]  # a 2xx body -> None if it is right, else why not (Locust's failure text)
RUN_STARTED: float | None = None  # perf_counter() at test start: constant-throughput schedules end with the run


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser  # Locust's own add_argument (not an argument group's) knows is_secret and include_in_web_ui
    group.add_argument("--api-key", env_var="LOADTEST_API_KEY", default="", is_secret=True,
                       help="X-API-Key (verify + enrol scopes); several keys of one tenant, comma-separated, "
                            "spread the users over them (the gateway rate-limits per key)")
    group.add_argument("--gallery", env_var="LOADTEST_GALLERY", default="loadtest",
                       help="seeded gallery (subjects obama, biden, fillers); enrolment uses <gallery>-enrol")
    group.add_argument("--mix", env_var="LOADTEST_MIX", default=DEFAULT_MIX,
                       help=f"endpoint weights, e.g. {DEFAULT_MIX}")
    group.add_argument("--shape", env_var="LOADTEST_SHAPE", default="steady", choices=sorted(SHAPES),
                       help="steady | step (burst to 3x in the middle third) | spike (5x for 10 %% of the run)")
    group.add_argument("--shape-factor", env_var="LOADTEST_SHAPE_FACTOR", type=float, default=0.0,
                       help="burst/spike multiplier (0: the shape's default, 3 for step, 5 for spike)")
    group.add_argument("--rps", env_var="LOADTEST_RPS", type=float, default=0.0,
                       help="target tasks/s at the base user count (constant throughput); 0: think time")
    group.add_argument("--arrivals", env_var="LOADTEST_ARRIVALS", default="poisson", choices=("poisson", "even"),
                       help="with --rps: Poisson arrivals (random gaps, exact count; loadtest/arrivals.py) or even")
    group.add_argument("--ramp-s", env_var="LOADTEST_RAMP_S", type=float, default=None,
                       help="seconds to start the base users (default: 10 %% of the run, 1-10 s)")
    group.add_argument("--think-time", env_var="LOADTEST_THINK_TIME", default="0.5,2.0",
                       help="MIN,MAX seconds between a user's tasks when --rps is 0")
    group.add_argument("--bad-fraction", env_var="LOADTEST_BAD_FRACTION", type=float, default=0.05,
                       help="share of deliberately bad requests (expected 4xx)")


@events.init.add_listener
def _init(environment: Any, runner: Any = None, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # Locust used as a library
        return
    mix = parse_mix(options.mix)
    for key, class_name in ENDPOINTS.items():
        cls = environment.available_user_classes.get(class_name) if environment.available_user_classes else None
        if cls is not None:
            cls.weight = mix.get(key, 0)
    # Weight-0 classes must not be dispatched at all (Locust only filters them when the environment is built).
    environment.user_classes[:] = [c for c in environment.user_classes if c.weight > 0]
    if not environment.user_classes:
        raise ValueError(f"no user class left: mix {options.mix!r} and the classes named on the command line")
    if not isinstance(runner, MasterRunner):  # a master sends no requests
        if not options.api_key:
            raise ValueError("no API key: pass --api-key or set LOADTEST_API_KEY")
        global PAYLOADS
        started = time.perf_counter()
        PAYLOADS = Payloads(options.gallery)
        log.info("payloads ready: %.1f MB in %.1f s", PAYLOADS.size_bytes() / 1e6, time.perf_counter() - started)


@events.test_start.add_listener
def _test_start(**_: Any) -> None:
    global RUN_STARTED
    RUN_STARTED = time.perf_counter()


def run_seconds(options: Any) -> float:
    """The run's length: Locust has parsed --run-time into seconds; without one, 60 s (the shapes need an end)."""
    return float(options.run_time or 60)


def pacer(user: ApiUser) -> Callable[[], float]:
    """The wait between tasks: constant throughput (--rps spread over the base users) or think time."""
    options = user.environment.parsed_options
    if options.rps > 0:
        period = max(1, options.num_users or 1) / options.rps
        now = time.perf_counter()
        end = (RUN_STARTED or now) + run_seconds(options)
        times = schedule(now, end, period, options.arrivals)

        def wait() -> float:
            delay = next_wait(times, time.perf_counter(), late_after=period)
            return 3600.0 if delay is None else delay  # schedule done: idle until the run stops the user

        user.first_wait = wait()
        return wait
    low, high = (float(v) for v in options.think_time.split(","))
    user.first_wait = random.uniform(0, high)
    return lambda: random.uniform(low, high)


class ApiUser(FastHttpUser):
    abstract = True
    network_timeout = 30.0  # above the gateway's own Triton deadline (10 s): its 504 is what we want to see
    connection_timeout = 10.0
    first_wait = 0.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert PAYLOADS is not None
        self.payloads = PAYLOADS
        self.api_key = random.choice([k.strip() for k in options.api_key.split(",") if k.strip()])
        self.bad_fraction = options.bad_fraction
        self._wait = pacer(self)
        if self.first_wait:
            time.sleep(self.first_wait)  # gevent-patched: spreads the users' first requests

    def wait_time(self) -> float:
        return self._wait()

    def bad(self) -> bool:
        return random.random() < self.bad_fraction

    def send(self, method: str, path: str, name: str, *, body: Body | None = None, json: Any = None,
             expect: int = 200, code: str | None = None, check: Check | None = None) -> Any:
        """One request; success iff the status is `expect` (and the problem `code`, and `check` returns None)."""
        headers = {"X-API-Key": self.api_key}
        kwargs: dict[str, Any] = {}
        if body is not None:
            headers["Content-Type"] = body.content_type
            kwargs["data"] = body.data
        elif json is not None:
            kwargs["json"] = json
        with self.client.request(method, path, name=name, headers=headers, catch_response=True, **kwargs) as r:
            if r.status_code != expect:
                r.failure(f"expected {expect}{' ' + code if code else ''}, got {r.status_code} {_detail(r)}")
                return None
            try:
                payload = r.json()
            except ValueError:
                r.failure(f"{r.status_code} without a JSON body")
                return None
            if code is not None and payload.get("code") != code:
                r.failure(f"expected code {code}, got {payload.get('code')}")
                return None
            problem = check(payload) if check else None
            if problem:
                r.failure(problem)
                return None
            r.success()
            return payload

    def genuine_or_impostor(self, path: str, name: str, kind: str, genuine: Check, impostor: Check) -> None:
        """Half the requests with the `<kind>_genuine` payloads, half with `<kind>_impostor`, each checked."""
        if random.random() < 0.5:
            self.send("POST", path, name, body=self.payloads.pick(f"{kind}_genuine"), check=genuine)
        else:
            self.send("POST", path, name, body=self.payloads.pick(f"{kind}_impostor"), check=impostor)


def _detail(response: Any) -> str:
    """The problem code of an error answer, or the transport error (status 0: refused, reset, timed out)."""
    if response.status_code == 0:
        return type(getattr(response, "error", None)).__name__
    try:
        return str(response.json().get("code", ""))
    except Exception:  # not JSON: e.g. a proxy's HTML error page
        return ""


def expect_match(wanted: bool) -> Callable[[dict], str | None]:
    def check(body: dict) -> str | None:
        # No similarity in the message: Locust groups failures by message.
        return None if body.get("match") is wanted else f"wrong decision: match={body.get('match')}, expected {wanted}"
    return check


def expect_subject(subject: str) -> Callable[[dict], str | None]:
    def check(body: dict) -> str | None:
        if body.get("decision") == "match" and body.get("subject_id") == subject:
            return None
        return f"wrong identity: {body.get('decision')} {body.get('subject_id')!r}, expected {subject!r}"
    return check


def expect_faces(low: int, high: int) -> Callable[[dict], str | None]:
    def check(body: dict) -> str | None:
        n = len(body.get("faces", []))
        return None if low <= n <= high else f"found {n} faces, expected {low}-{high}"
    return check


class VerifyImageUser(ApiUser):
    """1:1, probe vs a second image: two pipeline calls per request."""

    @task
    def verify(self) -> None:
        name = "/v1/verify (image)"
        if self.bad():
            self.send("POST", "/v1/verify", f"{name} [bad: no face]", body=self.payloads.pick("verify_no_face"),
                      expect=422, code="no_face")
        else:
            self.genuine_or_impostor("/v1/verify", name, "verify", expect_match(True), expect_match(False))


class VerifySubjectUser(ApiUser):
    """1:1 against an enrolled subject: one pipeline call plus a Milvus fetch of the subject's templates."""

    @task
    def verify(self) -> None:
        name = "/v1/verify (subject)"
        if self.bad():
            self.send("POST", "/v1/verify", f"{name} [bad: unknown subject]",
                      body=self.payloads.pick("subject_missing"), expect=404, code="subject_not_found")
        else:
            self.genuine_or_impostor("/v1/verify", name, "subject", expect_match(True), expect_match(False))


class IdentifyUser(ApiUser):
    """1:N against the seeded gallery: one pipeline call plus a Milvus search."""

    @task
    def identify(self) -> None:
        name = "/v1/identify"
        if self.bad():
            self.send("POST", "/v1/identify", f"{name} [bad: no face]", body=self.payloads.pick("identify_no_face"),
                      expect=422, code="no_face")
        else:
            self.genuine_or_impostor("/v1/identify", name, "identify", expect_subject(self.payloads.subject),
                                     expect_subject(self.payloads.impostor_subject))


class DetectUser(ApiUser):
    """All faces in an image: one, several (group photos) or none."""

    @task
    def detect(self) -> None:
        name = "/v1/detect"
        roll = random.random()
        if self.bad():
            self.send("POST", "/v1/detect", f"{name} [bad: GIF]", body=self.payloads.pick("detect_unsupported"),
                      expect=415, code="unsupported_media_type")
        elif roll < 0.5:
            self.send("POST", "/v1/detect", name, body=self.payloads.pick("detect_one"), check=expect_faces(1, 1))
        elif roll < 0.85:
            self.send("POST", "/v1/detect", name, body=self.payloads.pick("detect_group"), check=expect_faces(2, 16))
        else:
            self.send("POST", "/v1/detect", name, body=self.payloads.pick("detect_none"), check=expect_faces(0, 0))


class EnrolUser(ApiUser):
    """An enrolment lifecycle in <gallery>-enrol: create a subject, enrol 1-2 photos, erase it (bounded growth).

    One task is three requests; with --rps the target counts tasks (lifecycles), not requests.
    """

    @task
    def enrol(self) -> None:
        gallery = quote(f"{self.payloads.gallery}-enrol", safe="")
        subject = f"lt-{uuid.uuid4().hex[:12]}"
        base = f"/v1/galleries/{gallery}/subjects"
        if self.send("POST", base, "/v1/galleries/{g}/subjects", json={"subject_id": subject},
                     expect=201) is None:
            return
        faces = f"{base}/{subject}/faces"
        if self.bad():
            self.send("POST", faces, ".../subjects/{s}/faces [bad: corrupt image]",
                      body=self.payloads.pick("enrol_corrupt"), expect=400, code="invalid_image")
        else:
            body = self.payloads.pick("enrol_faces")
            images = 2 if "+" in body.label else 1
            self.send("POST", faces, ".../subjects/{s}/faces", body=body, expect=201,
                      check=expect_faces(images, images))
        self.send("DELETE", f"{base}/{subject}", ".../subjects/{s}",
                  check=lambda b: None if b.get("remaining_templates") == 0 else f"receipt: {b}")


class NamedShape(LoadTestShape):
    """The shape chosen by --shape (steady, step, spike; loadtest/shapes.py) over --users and --run-time."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        users = max(1, options.num_users or 1)
        duration = run_seconds(options)
        factor = options.shape_factor or DEFAULT_FACTORS[options.shape]
        return SHAPES[options.shape](self.get_run_time(), users, duration, factor, options.ramp_s)
