"""The chart's autoscaling queries on a real overload: a local Triton's and gateway's /metrics recorded through
idle -> about 3x capacity -> idle (tests/helm/data/triton-overload.json, made by helm/tools/record_triton_metrics.py;
the command, the machine's load average at each scrape and the load test's own numbers are in the file).

The recording is replayed into promtool as the series Prometheus would hold for one Triton pod behind the
stable Service and one stable gateway pod. The HPA's desired replica count at the chart's minReplicas
(current = 2) is the larger of its two metrics' counts: Triton's queue time per request (ceil(current x value
/ target); the HPA's per-pod average of the Pods metric has one pod's value here) and the calls the gateways
hold back for Triton (an AverageValue target: ceil(value / target)). Evaluated with the chart's own KEDA
triggers and prometheus-adapter rules (Pods and External): at most current before the load, above it under the
load, back at most current once the rate window has passed the load. Why two metrics: each gateway pod bounds
its calls in flight, so at saturation Triton's queue time stops growing while the gateways' backlog does
(docs/helm.md has the recorded numbers).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).parent / "data" / "triton-overload.json"
NS = "facestack"
R = "fs-facestack"
TR = f"{R}-triton"
POD = f"{TR}-7d9f8c6b5-x2x4k"
GW = f"{R}-gateway"
GW_POD = f"{GW}-5c8d7b9f6-q7wz2"
PIPELINE = "face_pipeline"


@pytest.fixture(scope="module")
def recording() -> dict:
    return json.loads(DATA.read_text())


def input_series(recording: dict) -> list[dict]:
    """One promtool input series per recorded (metric, labels), with the labels the ServiceMonitors add."""
    scrapes = recording["scrapes"]
    values: dict[tuple, list[str]] = {}
    for source, service, pod in (("samples", TR, POD), ("gateway_samples", GW, GW_POD)):
        for i, scrape in enumerate(scrapes):
            for name, labels, value in scrape[source]:
                all_labels = {**labels, "namespace": NS, "service": service, "pod": pod, "job": service}
                key = (name, tuple(sorted(all_labels.items())))
                values.setdefault(key, ["_"] * len(scrapes))[i] = repr(float(value))
    out = []
    for (name, labels), vals in sorted(values.items()):
        selector = ",".join(f'{k}="{v}"' for k, v in labels)
        out.append({"series": f"{name}{{{selector}}}", "values": " ".join(vals)})
    return out


def pipeline_successes(recording: dict) -> list[float]:
    out = []
    for scrape in recording["scrapes"]:
        out.append(sum(v for n, labels, v in scrape["samples"]
                       if n == "nv_inference_request_success" and labels.get("model") == PIPELINE))
    return out


def load_window(recording: dict) -> tuple[int, int]:
    """First and last scrape index at which face_pipeline had answered more requests than at the previous one."""
    done = pipeline_successes(recording)
    busy = [i for i in range(1, len(done)) if done[i] > done[i - 1]]
    assert busy, "the recording shows no face_pipeline traffic"
    return busy[0], busy[-1]


def test_recording_is_an_overload(recording):
    """The recording is what it claims: offered well past the measured capacity, served less than offered
    (a backlog built), a full rate window of load, then idle."""
    start, end = load_window(recording)
    interval = recording["interval_s"]
    assert (end - start) * interval >= 60, "the load must fill the query's 1 m window"
    assert (len(recording["scrapes"]) - 1 - end) * interval >= 75, "75 s of idle after the load"
    sent = recording["loadtest_stats"]["Aggregated"]["rps"]  # what Locust achieved, not only what it aimed at
    assert sent >= 2.5 * recording["capacity_rps"], f"{sent:.1f} req/s sent is not ~3x capacity"
    done = pipeline_successes(recording)
    images_per_s = (done[end] - done[start - 1]) / ((end - start + 1) * interval)
    assert images_per_s / 2 < 0.8 * sent, "served (2 images per verify) close to sent"


def _promtool(promtool: Path, tmp_path: Path, rules: list[dict], tests: list[dict]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "hpa", "rules": rules}]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "5s", "tests": tests}, sort_keys=False))
    return subprocess.run([str(promtool), "test", "rules", str(tmp_path / "test.yaml")], capture_output=True,
                          text=True, check=False, timeout=300)


def _current(helm, k8s) -> int:
    return int(k8s.named(helm.objects(), "HorizontalPodAutoscaler", TR)["spec"]["minReplicas"])


def _queries(helm, k8s) -> dict[str, tuple[str, float, str, float]]:
    """name -> (queue query, its target, backlog query, its target per pod) for KEDA, the adapter's Pods and
    External metrics, as the chart renders them."""
    triggers = k8s.named(helm.objects("keda"), "ScaledObject", TR)["spec"]["triggers"]
    queue_trigger, backlog_trigger = (t["metadata"] for t in triggers)
    cm = k8s.named(helm.objects(), "ConfigMap", f"{R}-adapter-rules")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    pods = next(r for r in config["rules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    ext = next(r for r in config["externalRules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    backlog = next(r for r in config["externalRules"] if r["name"]["as"] == "facestack_triton_backlog_calls")
    hpa = k8s.named(helm.objects(), "HorizontalPodAutoscaler", TR)["spec"]["metrics"]
    queue_target = float(hpa[0]["pods"]["target"]["averageValue"])
    backlog_metric = hpa[1]["external"]
    backlog_target = float(backlog_metric["target"]["averageValue"])
    (callers,) = backlog_metric["metric"]["selector"]["matchExpressions"]
    assert callers["values"] == [GW]  # the stable gateway calls the stable Triton

    def fill(query: str, matchers: str, group_by: str) -> str:
        return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", group_by)

    # what the adapter's matchers become for the HPA's selector (namespace added, `In` as a regex)
    backlog_adapter = fill(backlog["metricsQuery"], f'namespace="{NS}",service=~"{GW}"', "")
    return {
        "Keda": (queue_trigger["query"], float(queue_trigger["threshold"]), backlog_trigger["query"],
                 float(backlog_trigger["threshold"])),
        "AdapterPods": (fill(pods["metricsQuery"], f'namespace="{NS}",pod="{POD}"', "pod"), queue_target,
                        backlog_adapter, backlog_target),
        "AdapterExternal": (fill(ext["metricsQuery"], f'namespace="{NS}",service="{TR}"', ""), queue_target,
                            backlog_adapter, backlog_target),
    }


def _desired_above(current: int, queue: str, queue_target: float, backlog: str, backlog_target: float) -> str:
    """PromQL true when the HPA's desired replicas (the larger of the two metrics' counts) exceed current."""
    return f"max(ceil({current} * ({queue}) / {queue_target}) or ceil(({backlog}) / {backlog_target})) > {current}"


def test_desired_replicas_rise_under_overload_and_fall_after(helm, k8s, promtool, recording, tmp_path):
    interval = recording["interval_s"]
    start, end = load_window(recording)
    current = _current(helm, k8s)
    queries = _queries(helm, k8s)
    rules = [{"alert": f"{name}DesiredAboveCurrent", "expr": _desired_above(current, *q)}
             for name, q in queries.items()]
    before, under, after = max(0, start - 1), end, end + int(75 / interval)
    assert after < len(recording["scrapes"])
    checks = []
    for name in queries:
        alertname = f"{name}DesiredAboveCurrent"
        for index, firing in ((before, False), (under, True), (after, False)):
            expected = [{"exp_labels": {"alertname": alertname}}] if firing else []
            checks.append({"eval_time": f"{round(index * interval)}s", "alertname": alertname,
                           "exp_alerts": expected})
    tests = [{"name": "recorded overload", "interval": f"{interval:g}s", "input_series": input_series(recording),
              "alert_rule_test": checks}]
    proc = _promtool(promtool, tmp_path, rules, tests)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_the_check_can_fail(helm, k8s, promtool, recording, tmp_path):
    """Guard against a vacuous pass: claiming no scale-up under the load fails."""
    interval = recording["interval_s"]
    _, end = load_window(recording)
    current = _current(helm, k8s)
    rules = [{"alert": "KedaDesiredAboveCurrent", "expr": _desired_above(current, *_queries(helm, k8s)["Keda"])}]
    tests = [{"interval": f"{interval:g}s", "input_series": input_series(recording), "alert_rule_test": [
        {"eval_time": f"{round(end * interval)}s", "alertname": "KedaDesiredAboveCurrent", "exp_alerts": []}]}]
    assert _promtool(promtool, tmp_path, rules, tests).returncode != 0

