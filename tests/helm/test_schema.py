"""Values that break values.schema.json (or the cross-field checks in templates/validate.yaml) are rejected
by `helm template` and `helm lint` with a message that names the key."""

from __future__ import annotations

import pytest
import yaml

SCHEMA_VIOLATIONS = [
    ({"gateway": {"replica": 3}}, "Additional property replica is not allowed"),
    ({"canary": {"gateway": {"overrides": {"imag": {"tag": "x"}}}}}, "Additional property imag is not allowed"),
    ({"canary": {"weight": 150}}, "canary.weight"),
    ({"triton": {"autoscaling": {"mode": "both"}}}, "triton.autoscaling.mode"),
    ({"triton": {"autoscaling": {"metricType": "Object"}}}, "triton.autoscaling.metricType"),
    ({"triton": {"autoscaling": {"targetQueueSeconds": "10ms"}}}, "triton.autoscaling.targetQueueSeconds"),
    ({"triton": {"autoscaling": {"models": []}}}, "triton.autoscaling.models"),
    ({"triton": {"gpu": {"count": 0}}}, "triton.gpu.count"),
    ({"triton": {"modelRepository": {"source": "s3"}}}, "triton.modelRepository.source"),
    ({"triton": {"modelRepository": {"versionPolicy": {"face_embedder": {"specific": {"versions": [0]}}}}}},
     "versions.0"),
    ({"triton": {"modelRepository": {"versionPolicy": {"face_embedder": {"newest": {}}}}}}, "newest"),
    ({"triton": {"probes": {"readiness": {"httpGet": {"path": "/v2/health/ready"}}}}}, "httpGet"),
    ({"triton": {"resources": {"limits": {"memory": "lots"}}}}, "triton.resources.limits.memory"),
    ({"gateway": {"image": {"digest": "latest"}}}, "gateway.image.digest"),
    ({"gateway": {"logLevel": "verbose"}}, "gateway.logLevel"),
    ({"ingress": {"host": "Facestack.Example.com"}}, "ingress.host"),
    ({"monitoring": {"slo": {"availability": 99.9}}}, "monitoring.slo.availability"),
    ({"milvusConnection": {"uri": "milvus:19530"}}, "milvusConnection.uri"),
    ({"tritons": {}}, "Additional property tritons is not allowed"),
]

TEMPLATE_CHECKS = [
    ({"triton": {"terminationGracePeriodSeconds": 30}}, "must exceed preStopSleepSeconds + exitTimeoutSeconds"),
    ({"triton": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas (5) is above maxReplicas (2)"),
    ({"triton": {"gpu": {"enabled": False}, "modelRepository": {"tensorrt": {"enabled": True}}}},
     "tensorrt.enabled needs triton.gpu.enabled"),
    ({"gateway": {"shutdownTimeoutSeconds": 60}}, "must exceed preStopSleepSeconds + shutdownTimeoutSeconds"),
    ({"canary": {"enabled": True}, "ingress": {"enabled": False}}, "canary.enabled needs ingress.enabled"),
    ({"canary": {"enabled": True}, "ingress": {"className": "traefik"}}, "canary.enabled needs ingress-nginx"),
    ({"gateway": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}}, "gateway.autoscaling needs a metric"),
    ({"gateway": {"apiKeys": {"existingSecret": "a", "hashedKeysJson": "{}"}}}, "not both"),
    ({"triton": {"modelRepository": {"source": "pvc"}}}, "pvc.claimName is required"),
]


def _values_file(tmp_path, values: dict):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(("values", "message"), SCHEMA_VIOLATIONS + TEMPLATE_CHECKS,
                         ids=[m for _, m in SCHEMA_VIOLATIONS + TEMPLATE_CHECKS])
def test_bad_values_are_rejected(helm, tmp_path, values, message):
    result = helm.template(values_files=(_values_file(tmp_path, values),), check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr, result.stderr


def test_lint_rejects_schema_violations(helm, tmp_path):
    values, message = SCHEMA_VIOLATIONS[0]
    result = helm.run("lint", "--strict", str(helm.chart), "-f", str(_values_file(tmp_path, values)))
    assert result.returncode != 0 and message in result.stdout + result.stderr


def test_lint_only_reports_template_fail_as_info(helm, tmp_path):
    """Helm 3.17's lint downgrades a template's `fail` to an [INFO] line, even with --strict: the
    cross-field checks are enforced by `helm template` / `install` / `upgrade` (test above), not by lint."""
    values, message = TEMPLATE_CHECKS[0]
    result = helm.run("lint", "--strict", str(helm.chart), "-f", str(_values_file(tmp_path, values)))
    assert result.returncode == 0
    assert f"[INFO] Fail: triton.terminationGracePeriodSeconds (30) {message}" in result.stdout + result.stderr


def test_schema_covers_every_default_key(k8s):
    """Every key in values.yaml is described by the schema (so additionalProperties: false is safe)."""
    import json

    schema = json.loads((k8s.CHART_SRC / "values.schema.json").read_text())
    values = yaml.safe_load((k8s.CHART_SRC / "values.yaml").read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(value, node, path):
        node = resolve(node)
        if not isinstance(value, dict) or node.get("additionalProperties", True) is not False:
            return
        for key, sub in value.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in values.schema.json"
            walk(sub, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")
