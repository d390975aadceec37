"""Schemathesis against the gateway's own OpenAPI schema, every operation, valid and schema-violating
requests, over real HTTP to the gateway as a process (the real Triton and Milvus Lite behind it).

Per response: never a 5xx; the status is one the schema documents for the operation; the body matches the
documented schema; every error is application/problem+json whose `code` is a stable code with that status;
schema-violating requests are refused with a 4xx. At the end: the process is up and its RSS grew within
bounds. Seeded (derandomized), so a failure reproduces; FACESTACK_FUZZ_EXAMPLES deepens a run (docs/reliability.md).
"""

from __future__ import annotations

import collections
import json
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from facestack.settings import Settings
from gateway.app import create_app
from gateway.errors import CODES
from tests.reliability.harness import check_bounded

pytestmark = pytest.mark.triton

EXAMPLES = int(os.environ.get("FACESTACK_FUZZ_EXAMPLES", "12"))  # per operation and mode
CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance, st_checks.content_type_conformance,
          st_checks.response_schema_conformance, st_checks.negative_data_rejection]
# Operations known at collection time: the in-process app's schema (building the app touches nothing).
OPERATIONS = [f"{method.upper()} {path}" for path, item in create_app(Settings(api_key="x")).openapi()["paths"].items()
              for method in item]
STATS: collections.Counter[tuple[str, int]] = collections.Counter()


@pytest.fixture(scope="module")
def target(fuzz_target):
    return fuzz_target.gateway, schemathesis.openapi.from_url(f"{fuzz_target.gateway.url}/openapi.json")


def test_schema_lists_every_route(target) -> None:
    _, schema = target
    served = {f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()}
    assert served == set(OPERATIONS) and len(served) >= 18


def check_problem(response) -> None:  # schemathesis' Response: lowercase header names, list values
    if response.status_code < 400:
        return
    assert response.headers["content-type"][0].startswith("application/problem+json"), response.text[:300]
    body = json.loads(response.content)
    assert body["code"] in CODES and CODES[body["code"]][0] == response.status_code == body["status"], body


def fuzz(gateway, schema, key: str, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    session = requests.Session()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case) -> None:
        # A real key unless the case is about the key itself (negative mode may drop or mangle it).
        if mode == GenerationMode.POSITIVE or not schema.is_security_param_negated(case):
            case.headers = {**(case.headers or {}), "X-API-Key": key}
        response = case.call(base_url=gateway.url, session=session, timeout=60)
        STATS[(label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)
        check_problem(response)

    try:
        one()
    except Unsatisfiable:  # nothing to violate (an operation without parameters or key): no negative cases
        assert mode == GenerationMode.NEGATIVE, label
    finally:
        session.close()


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_operation(target, keys, label) -> None:
    gateway, schema = target
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        fuzz(gateway, schema, keys["acme"], label, mode)
    assert gateway.proc.poll() is None, gateway.log_text()[-3000:]


def test_gateway_stayed_up_with_bounded_memory(fuzz_target, keys) -> None:
    rss, fds = check_bounded(fuzz_target, keys)
    statuses: collections.Counter[int] = collections.Counter()
    for (_, status), n in STATS.items():
        statuses[status] += n
    print(f"\nFIGURE fuzz_api cases={sum(STATS.values())} examples_per_op_mode={EXAMPLES} "
          f"statuses={dict(sorted(statuses.items()))} rss_mb={fuzz_target.baseline_rss_mb:.0f}->{rss:.0f} "
          f"fds={fuzz_target.baseline_fds}->{fds}")
    assert all(status < 500 for status in statuses)
