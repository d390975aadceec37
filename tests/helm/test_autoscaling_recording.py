"""The chart's autoscaling queries on a real overload: a local Triton's /metrics recorded through idle -> about
3x capacity -> idle (tests/helm/data/triton-overload.json, made by helm/tools/record_triton_metrics.py; the
command, the machine's load average at each scrape and the load test's own numbers are in the file).

The recording is replayed into promtool as the series Prometheus would hold for one Triton pod behind the
stable Service, and the HPA's rule at the chart's minReplicas (current = 2), desired = ceil(current x value /
target) (the HPA's per-pod average of the Pods metric has one pod's value here), is evaluated with the chart's
own KEDA query and prometheus-adapter queries (Pods and External): at most current before the load, above it
under the load, back at most current once the rate window has passed the load.
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
PIPELINE = "face_pipeline"


@pytest.fixture(scope="module")
def recording() -> dict:
    return json.loads(DATA.read_text())


def input_series(recording: dict) -> list[dict]:
    """One promtool input series per recorded (metric, labels), with the labels the ServiceMonitor adds."""
    scrapes = recording["scrapes"]
    values: dict[tuple, list[str]] = {}
    for i, scrape in enumerate(scrapes):
        for name, labels, value in scrape["samples"]:
            key = (name, tuple(sorted(labels.items())))
            values.setdefault(key, ["_"] * len(scrapes))[i] = repr(float(value))
    out = []
    for (name, labels), vals in sorted(values.items()):
        all_labels = {**dict(labels), "namespace": NS, "service": TR, "pod": POD, "job": TR}
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
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
    assert recording["offered_rps"] >= 2.5 * recording["capacity_rps"]
    done = pipeline_successes(recording)
    images_per_s = (done[end] - done[start - 1]) / ((end - start + 1) * interval)
    assert images_per_s / 2 < 0.8 * recording["offered_rps"], "served (2 images per verify) close to offered"


def _promtool(promtool: Path, tmp_path: Path, rules: list[dict], tests: list[dict]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "hpa", "rules": rules}]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "5s", "tests": tests}, sort_keys=False))
    return subprocess.run([str(promtool), "test", "rules", str(tmp_path / "test.yaml")], capture_output=True,
                          text=True, check=False, timeout=300)


def _current(helm, k8s) -> int:
    return int(k8s.named(helm.objects(), "HorizontalPodAutoscaler", TR)["spec"]["minReplicas"])


def _queries(helm, k8s) -> dict[str, tuple[str, float, dict]]:
    """name -> (query, target, labels of its result) for KEDA, the adapter's Pods and External metrics."""
    trigger = k8s.named(helm.objects("keda"), "ScaledObject", TR)["spec"]["triggers"][0]["metadata"]
    cm = k8s.named(helm.objects(), "ConfigMap", f"{R}-adapter-rules")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    pods = next(r for r in config["rules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    ext = next(r for r in config["externalRules"] if r["name"]["as"] == "facestack_triton_queue_seconds")
    hpa = k8s.named(helm.objects(), "HorizontalPodAutoscaler", TR)["spec"]["metrics"][0]["pods"]["target"]

    def fill(query: str, matchers: str, group_by: str) -> str:
        return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", group_by)

    service = {"namespace": NS, "service": TR}
    return {
        "Keda": (trigger["query"], float(trigger["threshold"]), service),
        "AdapterPods": (fill(pods["metricsQuery"], f'namespace="{NS}",pod="{POD}"', "pod"),
                        float(hpa["averageValue"]), {"pod": POD}),
        "AdapterExternal": (fill(ext["metricsQuery"], f'namespace="{NS}",service="{TR}"', ""),
                            float(hpa["averageValue"]), service),
    }


def test_desired_replicas_rise_under_overload_and_fall_after(helm, k8s, promtool, recording, tmp_path):
    interval = recording["interval_s"]
    start, end = load_window(recording)
    queries = _queries(helm, k8s)
    current = _current(helm, k8s)
    rules = [{"alert": f"{name}DesiredAboveCurrent", "expr": f"ceil({current} * ({query}) / {target}) > {current}"}
             for name, (query, target, _) in queries.items()]
    before, under, after = max(0, start - 1), end, end + int(75 / interval)
    assert after < len(recording["scrapes"])
    checks = []
    for name, (_, _, labels) in queries.items():
        alertname = f"{name}DesiredAboveCurrent"
        for index, firing in ((before, False), (under, True), (after, False)):
            expected = [{"exp_labels": {"alertname": alertname, **labels}}] if firing else []
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
    query, target, _ = _queries(helm, k8s)["Keda"]
    current = _current(helm, k8s)
    rules = [{"alert": "KedaDesiredAboveCurrent", "expr": f"ceil({current} * ({query}) / {target}) > {current}"}]
    tests = [{"interval": f"{interval:g}s", "input_series": input_series(recording), "alert_rule_test": [
        {"eval_time": f"{round(end * interval)}s", "alertname": "KedaDesiredAboveCurrent", "exp_alerts": []}]}]
    assert _promtool(promtool, tmp_path, rules, tests).returncode != 0
