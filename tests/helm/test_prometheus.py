"""promtool over the rendered monitoring: `check rules` on the PrometheusRule, `test rules` unit tests for
every recording rule and alert, and the prometheus-adapter / KEDA queries evaluated on synthetic Triton
series (so the HPA's number is the one intended, not just a well-formed query)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

NS = "facestack"
R = "fs-facestack"
GW = f"{R}-gateway"
GW_CANARY = f"{R}-gateway-canary"
TR = f"{R}-triton"


def _run(promtool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def rule_spec(helm, k8s) -> dict:
    rule = k8s.named(helm.objects(), "PrometheusRule", R)
    return rule["spec"]


@pytest.fixture(scope="module")
def rules_file(rule_spec, tmp_path_factory) -> Path:
    """The rendered PrometheusRule's spec is a Prometheus rule file as is."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_spec, sort_keys=False))
    return path


def test_check_rules(promtool, rules_file):
    proc = _run(promtool, "check", "rules", str(rules_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_rule_is_unit_tested(rule_spec):
    alerts = {r["alert"] for g in rule_spec["groups"] for r in g["rules"] if "alert" in r}
    records = {r["record"] for g in rule_spec["groups"] for r in g["rules"] if "record" in r}
    tested = {t["alertname"] for case in CASES for t in case.get("alert_rule_test", [])}
    tested_records = {name for case in CASES for t in case.get("promql_expr_test", [])
                      for name in re.findall(r"facestack:[a-z0-9_:]+", t["expr"])}
    assert alerts <= tested, f"alerts without a promtool unit test: {sorted(alerts - tested)}"
    assert records <= tested_records, f"recording rules without a unit test: {sorted(records - tested_records)}"


# ---------------------------------------------------------------------------------------------- unit tests


def series(metric: str, values: str, **labels) -> dict:
    """An input series; every series is in the release's namespace."""
    inner = ",".join(f'{k}="{v}"' for k, v in {"namespace": NS, **labels}.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def sample(value: float, **labels) -> dict:
    """An expected sample of a promql_expr_test (the metric name is dropped by the round() wrapper)."""
    inner = ",".join(f'{k}="{v}"' for k, v in {"namespace": NS, **labels}.items())
    return {"labels": f"{{{inner}}}", "value": value}


def expr(query: str, eval_time: str, *samples: dict) -> dict:
    return {"expr": query, "eval_time": eval_time, "exp_samples": list(samples)}


def gw_requests(service: str, ok: int, err: int, samples: int, route: str = "/v1/verify") -> list:
    """Gateway request counters: `ok` 200s and `err` 503s added per sample interval."""
    labels = {"service": service, "route": route, "method": "POST"}
    return [series("facestack_http_requests_total", f"0+{ok}x{samples}", **labels, status="200"),
            series("facestack_http_requests_total", f"0+{err}x{samples}", **labels, status="503")]


def triton(metric: str, model: str, per_15s: float, service: str = TR, pod: str = "p1") -> dict:
    return series(metric, f"0+{per_15s}x100", service=service, pod=pod, model=model, version="1")


def model_load(model: str, queue_us_per_req: float, rps: float, service: str = TR, pod: str = "p1") -> list:
    """Counters of a model answering `rps` requests per second that each wait `queue_us_per_req` µs in the queue
    and compute for 2 ms."""
    n = rps * 15
    at = {"service": service, "pod": pod}
    return [
        triton("nv_inference_request_success", model, n, **at),
        triton("nv_inference_queue_duration_us", model, n * queue_us_per_req, **at),
        triton("nv_inference_compute_infer_duration_us", model, n * 2000, **at),
        triton("nv_inference_request_duration_us", model, n * (queue_us_per_req + 2500), **at),
    ]


def ksm(metric: str, deployment: str, values: str) -> dict:
    return series(metric, values, deployment=deployment, job="kube-state-metrics")


def alert(name: str, eval_time: str, labels: dict | None = None, value: str = "", firing: bool = True) -> dict:
    """An alert_rule_test entry; annotations are filled in from the rendered rule (see _expand)."""
    return {"eval_time": eval_time, "alertname": name,
            "exp_alerts": [{"exp_labels": labels or {}, "value": value}] if firing else []}


def warning(**labels) -> dict:
    return {"severity": "warning", "namespace": NS, **labels}


QUEUE = "facestack:triton_queue_seconds_per_request:rate1m"
CANARY_IDLE = {"service": f"{TR}-canary", "pod": "c1"}
KSM = {"deployment": TR, "job": "kube-state-metrics"}

CASES = [
    {   # Triton recording rules: per Service and model; idle Services give no sample (not NaN).
        "name": "triton recording rules",
        "interval": "15s",
        "input_series": [
            *model_load("face_detector", 1000, 4),
            *model_load("face_embedder", 5000, 4),
            triton("nv_inference_request_success", "face_pipeline", 60),
            triton("nv_inference_queue_duration_us", "face_pipeline", 0),
            triton("nv_inference_compute_infer_duration_us", "face_pipeline", 0),
            triton("nv_inference_request_duration_us", "face_pipeline", 60 * 9000),
            triton("nv_inference_request_success", "face_detector", 0, **CANARY_IDLE),
            triton("nv_inference_queue_duration_us", "face_detector", 0, **CANARY_IDLE),
            triton("nv_inference_request_failure", "face_pipeline", 3),
        ],
        "promql_expr_test": [
            expr(QUEUE, "10m", sample(0.001, service=TR, model="face_detector"),
                 sample(0.005, service=TR, model="face_embedder"), sample(0, service=TR, model="face_pipeline")),
            expr('facestack:triton_compute_seconds_per_request:rate1m{model="face_detector"}', "10m",
                 sample(0.002, service=TR, model="face_detector")),
            expr('facestack:triton_request_seconds_per_request:rate1m{model="face_pipeline"}', "10m",
                 sample(0.009, service=TR, model="face_pipeline")),
            expr("facestack:triton_inference_failures:rate5m", "10m", sample(0.2, service=TR, model="face_pipeline")),
        ],
        # Failures of the pipeline model alone (undecodable client images) do not page.
        "alert_rule_test": [alert("FacestackTritonModelFailures", "10m", firing=False)],
    },
    {   # A composing model failing does.
        "name": "composing model failures",
        "interval": "15s",
        "input_series": [triton("nv_inference_request_failure", "face_embedder", 1.5)],
        "alert_rule_test": [
            alert("FacestackTritonModelFailures", "4m", firing=False),
            alert("FacestackTritonModelFailures", "10m", warning(service=TR, model="face_embedder")),
        ],
    },
    {   # Queue time: the embedder waits 100 ms per request for 15 minutes.
        "name": "queue time high",
        "interval": "15s",
        "input_series": [*model_load("face_detector", 1000, 2), *model_load("face_embedder", 100000, 2)],
        "alert_rule_test": [
            alert("FacestackTritonQueueTimeHigh", "5m", firing=False),
            alert("FacestackTritonQueueTimeHigh", "15m", warning(service=TR), value="100ms"),
        ],
    },
    {   # The backlog waits in face_pipeline's own queue (its composing models see at most two requests): the
        # alert reads the pipeline too.
        "name": "pipeline queue time high",
        "interval": "15s",
        "input_series": [*model_load("face_pipeline", 400000, 2), *model_load("face_detector", 1000, 2),
                         *model_load("face_embedder", 2000, 2)],
        "alert_rule_test": [
            alert("FacestackTritonQueueTimeHigh", "15m", warning(service=TR), value="400ms"),
        ],
    },
    {   # Triton saturated: the gateways' bulkheads hold 30 then 40 calls (over 16) for 20 minutes; a canary
        # gateway with 3 waiting stays quiet. Fires only after its 10 minutes, with the 5m average.
        "name": "gateway backlog high",
        "interval": "1m",
        "input_series": [series("facestack_triton_waiting", "30x10 40x10", service=GW, pod="g1"),
                         series("facestack_triton_waiting", "3x20", service=GW_CANARY, pod="c1")],
        "alert_rule_test": [
            alert("FacestackTritonBacklogHigh", "5m", firing=False),
            alert("FacestackTritonBacklogHigh", "19m", warning(service=GW), value="40"),
        ],
    },
    {   # 10 % of /v1 requests fail for 75 minutes: both burn-rate alerts and the 5xx alert fire.
        "name": "error budget burn",
        "interval": "1m",
        "input_series": [
            *gw_requests(GW, 360, 40, 75),
            *gw_requests(GW, 1000, 1000, 75, route="/metrics"),  # not an API route: ignored
        ],
        "promql_expr_test": [
            *(expr(f"facestack:slo_errors:ratio_rate{w}", "70m", sample(0.1)) for w in ("5m", "30m", "1h", "6h")),
            expr("facestack:http_request_errors:ratio_rate5m", "70m", sample(0.1, service=GW)),
            expr('sum by (status) (facestack:http_requests:rate5m{route="/v1/verify"})', "70m",
                 {"labels": '{status="200"}', "value": 6}, {"labels": '{status="503"}', "value": 40 / 60}),
        ],
        "alert_rule_test": [
            alert("FacestackErrorBudgetBurnFast", "70m", {"severity": "critical", "namespace": NS}, value="10%"),
            alert("FacestackErrorBudgetBurnSlow", "70m", warning(), value="10%"),
            alert("FacestackHigh5xxRate", "70m", warning(service=GW), value="10%"),
        ],
    },
    {   # 0.05 % errors: within the 99.9 % SLO, nothing fires.
        "name": "within budget",
        "interval": "1m",
        "input_series": gw_requests(GW, 7996, 4, 75),
        "alert_rule_test": [
            alert("FacestackErrorBudgetBurnFast", "70m", firing=False),
            alert("FacestackErrorBudgetBurnSlow", "70m", firing=False),
            alert("FacestackHigh5xxRate", "70m", firing=False),
        ],
    },
    {   # A failing canary: the per-Service 5xx alert names the canary, not the stable track.
        "name": "failing canary",
        "interval": "15s",
        "input_series": [*gw_requests(GW, 90, 0, 100), *gw_requests(GW_CANARY, 8, 2, 100)],
        "alert_rule_test": [alert("FacestackHigh5xxRate", "20m", warning(service=GW_CANARY), value="20%")],
    },
    {   # Every /v1 request takes between 1 and 2.5 s: p99 = 1 + 1.5 * 0.99.
        "name": "p99 latency",
        "interval": "15s",
        "input_series": [
            series("facestack_http_request_duration_seconds_bucket", f"0+{n}x100", service=GW, route="/v1/verify",
                   method="POST", le=le)
            for le, n in (("0.1", 0), ("0.5", 0), ("1", 0), ("2.5", 30), ("+Inf", 30))
        ],
        "promql_expr_test": [expr("facestack:http_request_duration_seconds:p99_5m", "15m", sample(2.485, service=GW))],
        "alert_rule_test": [
            alert("FacestackP99LatencyHigh", "8m", firing=False),
            alert("FacestackP99LatencyHigh", "20m", warning(service=GW), value="2.485s"),
        ],
    },
    {   # kube-state-metrics: the stable Triton has no ready replica; a canary scaled to 0 is not an outage.
        "name": "triton not ready",
        "interval": "1m",
        "input_series": [
            ksm("kube_deployment_status_replicas_available", TR, "0x30"),
            ksm("kube_deployment_spec_replicas", TR, "2x30"),
            ksm("kube_deployment_status_replicas_unavailable", TR, "2x30"),
            ksm("kube_deployment_status_replicas_available", f"{TR}-canary", "0x30"),
            ksm("kube_deployment_spec_replicas", f"{TR}-canary", "0x30"),
            ksm("kube_deployment_status_replicas_available", "other", "0x30"),
            ksm("kube_deployment_spec_replicas", "other", "1x30"),
        ],
        "alert_rule_test": [
            alert("FacestackTritonNotReady", "3m", firing=False),
            alert("FacestackTritonNotReady", "10m", {"severity": "critical", "namespace": NS, **KSM}),
            alert("FacestackTritonReplicasUnavailable", "10m", firing=False),
            alert("FacestackTritonReplicasUnavailable", "20m", warning(**KSM), value="2"),
        ],
    },
    {   # Prometheus cannot scrape one Triton pod.
        "name": "triton target down",
        "interval": "1m",
        "input_series": [
            series("up", "0x20", service=TR, instance="10.0.0.7:8002", job=TR, pod="p1"),
            series("up", "1x20", service=TR, instance="10.0.0.8:8002", job=TR, pod="p2"),
        ],
        "alert_rule_test": [
            alert("FacestackTritonTargetDown", "10m", warning(service=TR, instance="10.0.0.7:8002", job=TR, pod="p1")),
        ],
    },
]


def _expand(template: str, labels: dict, value: str) -> str:
    """Expand the few template forms the rules use, as Prometheus would for these cases."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return re.sub(r"\{\{ \$value( \| humanize\w*)? \}\}", value, out)


def _rounded(t: dict) -> dict:
    """promtool 2.42 compares floats exactly: compare round(expr, 1e-6) (round drops the metric name)."""
    samples = [{"labels": re.sub(r"^[^{]*", "", s["labels"]) or "{}", "value": round(s["value"], 6)}
               for s in t["exp_samples"]]  # the metric name is dropped by round()
    return {"expr": f"round({t['expr']}, 0.000001)", "eval_time": t["eval_time"], "exp_samples": samples}


def _unit_tests(rule_spec: dict) -> dict:
    rules = {r["alert"]: r for g in rule_spec["groups"] for r in g["rules"] if "alert" in r}
    tests = []
    for case in CASES:
        test = {k: v for k, v in case.items() if k not in ("name", "alert_rule_test", "promql_expr_test")}
        if "promql_expr_test" in case:
            test["promql_expr_test"] = [_rounded(t) for t in case["promql_expr_test"]]
        if "alert_rule_test" in case:
            test["alert_rule_test"] = []
            for t in case["alert_rule_test"]:
                rule = rules[t["alertname"]]
                exp = []
                for a in t["exp_alerts"]:
                    labels = {**a["exp_labels"], "alertname": t["alertname"]}
                    exp.append({"exp_labels": a["exp_labels"], "exp_annotations": {
                        k: _expand(v, labels, a["value"]) for k, v in rule["annotations"].items()}})
                test["alert_rule_test"].append({"eval_time": t["eval_time"], "alertname": t["alertname"],
                                                "exp_alerts": exp})
        tests.append(test)
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


def test_rules_unit_tests(promtool, rule_spec, rules_file):
    test_file = rules_file.parent / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(_unit_tests(rule_spec), sort_keys=False))
    proc = _run(promtool, "test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_tests_can_fail(promtool, rule_spec, rules_file):
    """Guard against a vacuous pass: a wrong expectation makes promtool fail."""
    tests = _unit_tests(rule_spec)
    tests["tests"] = tests["tests"][:1]
    tests["tests"][0]["promql_expr_test"][0]["exp_samples"][1]["value"] = 0.004  # 0.005 is right
    test_file = rules_file.parent / "rules_wrong_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    assert _run(promtool, "test", "rules", str(test_file)).returncode != 0


# ---------------------------------------------------------------------------------------------- HPA queries


def _adapter_rules(helm, k8s) -> dict:
    cm = k8s.named(helm.objects(), "ConfigMap", f"{R}-adapter-rules")
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_autoscaling_queries_compute_the_intended_value(helm, k8s, promtool, tmp_path):
    """Two Triton pods behind the stable Service: p1 busy (detector 2 ms, embedder 6 ms of queue per request),
    p2 idle. The Pods metric must give p1 0.006 s (the slower model) and p2 0 (not NaN, so the HPA can scale
    down); the External metric and the KEDA query 0.006 s for the Service (idle pods add no requests)."""
    config = _adapter_rules(helm, k8s)
    pods_rule = next(r for r in config["rules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    ext_rule = next(r for r in config["externalRules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    rps_rule = next(r for r in config["rules"] if r["name"]["as"] == "facestack_http_requests_per_second")
    keda = k8s.named(helm.objects("keda"), "ScaledObject", TR)["spec"]["triggers"][0]["metadata"]["query"]

    def fill(query: str, matchers: str, group_by: str) -> str:
        return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", group_by)

    pods = f'namespace="{NS}",pod=~"p1|p2"'
    records = [
        {"record": "adapter:pods", "expr": fill(pods_rule["metricsQuery"], pods, "pod")},
        {"record": "adapter:external", "expr": fill(ext_rule["metricsQuery"], f'namespace="{NS}",service="{TR}"', "")},
        {"record": "adapter:gateway_rps", "expr": fill(rps_rule["metricsQuery"], f'namespace="{NS}",pod="g1"', "pod")},
        {"record": "keda:query", "expr": keda},
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "hpa", "rules": records}]}))
    idle = [triton(m, model, 0, pod="p2") for model in ("face_detector", "face_embedder")
            for m in ("nv_inference_request_success", "nv_inference_queue_duration_us")]
    input_series = [
        *model_load("face_detector", 2000, 4), *model_load("face_embedder", 6000, 4),
        *model_load("face_pipeline", 0, 4), *idle,
        series("facestack_http_requests_total", "0+45x100", pod="g1", route="/v1/verify", method="POST", status="200"),
    ]
    checks = [
        expr("adapter:pods", "10m", {"labels": '{pod="p1"}', "value": 0.006}, {"labels": '{pod="p2"}', "value": 0}),
        expr("adapter:external", "10m", sample(0.006, service=TR)),
        expr("keda:query", "10m", sample(0.006, service=TR)),
        expr("adapter:gateway_rps", "10m", {"labels": '{pod="g1"}', "value": 3}),
    ]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "15s", "tests": [
        {"interval": "15s", "input_series": input_series, "promql_expr_test": [_rounded(t) for t in checks]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = _run(promtool, "test", "rules", str(tmp_path / "test.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_parse(helm, k8s, promtool, tmp_path):
    import json

    cm = k8s.named(helm.objects(), "ConfigMap", f"{R}-dashboard")
    dashboard = json.loads(cm["data"]["facestack.json"])
    exprs = [t["expr"].replace("$namespace", NS) for p in dashboard["panels"] for t in p["targets"]]
    rules = [{"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "dash.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _run(promtool, "check", "rules", str(tmp_path / "dash.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
