"""`helm template` for every values set on three Kubernetes minors; every rendered object validated strictly:
core kinds against kubernetes-validate's strict schemas, CRD kinds with the cloudcoil typed models plus a
round-trip comparison (the models drop unknown fields silently; the comparison does not)."""

from __future__ import annotations

import shutil

import pytest
import yaml

CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
             ("keda.sh/v1alpha1", "ScaledObject")}


def _nulls(value, path=""):
    if value is None:
        return [path or "<root>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}/{i}")]
    return []


def test_every_object_validates_strictly(helm, kube_schemas, crd_validate, values_set, kube_version):
    objects = helm.objects(values_set, kube_version)
    assert objects, "nothing rendered"
    problems = []
    for obj in objects:
        name = f"{obj['kind']} {obj['metadata']['name']}"
        # The schemas allow null almost everywhere; a null in a manifest is always a template slip.
        problems += [f"{name}: null at {p}" for p in _nulls(obj)]
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            problems += [f"{name}: {e}" for e in crd_validate(obj)]
            continue
        errors = kube_schemas.errors(obj, kube_version)
        if errors is None:
            problems.append(f"{name}: no schema for {obj['apiVersion']} in Kubernetes {kube_version}")
        else:
            problems += [f"{name}: {e}" for e in errors]
    assert not problems, "\n".join(problems)


def test_no_duplicate_keys_in_any_render(helm, k8s, values_set, kube_version):
    """Every render parses with the duplicate-key-rejecting loader (as Flux and kustomize --enable-helm would);
    a plain yaml.safe_load would silently keep the last of two equal keys."""
    text = helm.template(values_set, kube_version).stdout
    objects = k8s.load_all(text)
    assert len(objects) == len([d for d in yaml.safe_load_all(text) if d])
    for obj in objects:
        for labels in (obj["metadata"].get("labels", {}),
                       obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})):
            assert labels.get("app.kubernetes.io/name", "facestack") in ("facestack", "milvus"), obj["metadata"]


def test_duplicate_key_loader_rejects_duplicates(k8s):
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'app.kubernetes.io/name'"):
        k8s.load_all("metadata:\n  labels:\n    app.kubernetes.io/name: a\n    app.kubernetes.io/name: a\n")
    assert k8s.load_all("a: {b: 1}\n---\na: {b: 1}\n") == [{"a": {"b": 1}}, {"a": {"b": 1}}]


def test_common_labels_never_duplicate_selector_labels(helm, k8s):
    """commonLabels naming a selector key are overridden by the selector's value (one key, the right value)."""
    objects = helm.template(sets=("commonLabels.app\\.kubernetes\\.io/component=x", "commonLabels.team=faces")).objects
    for obj in objects:
        assert obj["metadata"]["labels"]["team"] == "faces"
    deploy = k8s.named(objects, "Deployment", f"{k8s.RELEASE}-facestack-gateway")
    assert deploy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    assert deploy["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"


def test_pod_templates_do_not_change_with_the_chart_version(helm, k8s, tmp_path):
    """Pod template labels carry no chart or app version: bumping the chart alone restarts no (GPU) pod."""
    bumped = tmp_path / "facestack"
    shutil.copytree(k8s.CHART_SRC, bumped)
    meta = (bumped / "Chart.yaml").read_text()
    (bumped / "Chart.yaml").write_text(meta.replace("\nversion: 0.1.0", "\nversion: 0.1.1"))
    def templates(chart):
        return {d["metadata"]["name"]: d["spec"]["template"] for d in helm.template(chart=chart).objects
                if d["kind"] == "Deployment"}

    before, after = templates(None), templates(bumped)
    assert before == after
    for template in before.values():
        assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(template["metadata"]["labels"])


def test_names_are_unique_and_valid(helm, values_set):
    objects = helm.objects(values_set)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects: {sorted(k for k in keys if keys.count(k) > 1)}"
    for kind, name in keys:
        assert len(name) <= 63 and name == name.lower(), f"{kind} {name}: not a DNS-1123 label"


def test_long_release_name_still_fits(helm, k8s):
    """Names are cut so that the longest suffix (-triton-canary) still fits in 63 characters."""
    result = helm.run("template", "r" * 53, str(helm.chart), "--namespace", k8s.NAMESPACE,
                      "--set", "canary.enabled=true", "--api-versions", "monitoring.coreos.com/v1")
    assert result.returncode == 0, result.stderr
    for obj in result.objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


def test_kube_version_gates(helm, k8s):
    """preStop uses the sleep action from 1.30 on (no shell needed), an exec sleep before."""
    old = k8s.named(helm.objects("defaults", "1.29.0"), "Deployment", f"{k8s.RELEASE}-facestack-gateway")
    new = k8s.named(helm.objects("defaults", "1.32.0"), "Deployment", f"{k8s.RELEASE}-facestack-gateway")
    old_hook = old["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    new_hook = new["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert old_hook == {"exec": {"command": ["sleep", "5"]}}
    assert new_hook == {"sleep": {"seconds": 5}}


def test_kube_version_below_chart_minimum_is_refused(helm):
    result = helm.template("defaults", "1.26.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


def test_crd_round_trip_catches_unknown_fields(crd_validate, helm):
    """The CRD check is not a formality: a misspelt field in a ServiceMonitor is reported."""
    sm = next(o for o in helm.objects() if o["kind"] == "ServiceMonitor")
    assert crd_validate(sm) == []
    bad = {**sm, "spec": {**sm["spec"], "endpoints": [{**sm["spec"]["endpoints"][0], "intervall": "5s"}]}}
    assert any("intervall" in e for e in crd_validate(bad))


def test_core_schemas_are_strict(kube_schemas, helm, k8s):
    """The core-kind check is not a formality either: a misspelt or misplaced field is reported."""
    deploy = k8s.named(helm.objects(), "Deployment", f"{k8s.RELEASE}-facestack-triton")
    assert kube_schemas.errors(deploy, "1.32.0") == []
    container = {**deploy["spec"]["template"]["spec"]["containers"][0], "livenesProbe": {}}
    bad = {**deploy, "spec": {**deploy["spec"], "template": {**deploy["spec"]["template"], "spec": {
        **deploy["spec"]["template"]["spec"], "containers": [container]}}}}
    assert any("livenesProbe" in e for e in kube_schemas.errors(bad, "1.32.0"))


@pytest.fixture(scope="module")
def notes_chart(k8s, tmp_path_factory):
    """`helm template` does not render NOTES.txt (and `install --dry-run` needs a cluster): a copy of the chart
    renders it into a ConfigMap instead."""
    chart = tmp_path_factory.mktemp("notes") / "facestack"
    shutil.copytree(k8s.CHART_SRC, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_check.tpl").write_text('{{- define "notes.check" }}' + notes + "{{- end }}")
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-check\ndata:\n"
        '  notes: {{ include "notes.check" . | toJson }}\n')
    return chart


def test_notes_render(helm, k8s, notes_chart, values_set):
    result = helm.template(values_set, chart=notes_chart)
    notes = k8s.named(result.objects, "ConfigMap", "notes-check")["data"]["notes"]
    assert "facestack 0.1.0 is installed as release fs" in notes
    assert ("Canary: 20% of requests go to fs-facestack-gateway-canary" in notes) == (values_set == "canary")
    assert ("kubectl -n facestack create secret generic fs-facestack-api-keys" in notes) == (
        values_set not in ("canary", "milvus"))
    assert ("WARNING: monitoring.enabled=false" in notes) is False  # monitoring-off also turns autoscaling off
    assert "helm test fs -n facestack" in notes


def test_notes_warn_when_autoscaling_has_no_scrape(helm, k8s, notes_chart):
    result = helm.template(chart=notes_chart, sets=("monitoring.enabled=false",))
    notes = k8s.named(result.objects, "ConfigMap", "notes-check")["data"]["notes"]
    assert "WARNING: monitoring.enabled=false, so this chart creates no ServiceMonitor" in notes
