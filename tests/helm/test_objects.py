"""Assertions on the rendered objects: what schemas cannot see (references between objects, GPU placement,
probes, security, autoscaling wiring, the canary split)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

R = "fs-facestack"  # release "fs": the full name prefix of every object
REPO = Path(__file__).resolve().parents[2]
GPU = "nvidia.com/gpu"


def _containers(spec: dict, init: bool = True) -> list[dict]:
    return spec.get("containers", []) + (spec.get("initContainers", []) if init else [])


def _component(obj: dict, k8s) -> str:
    return k8s.pod_labels(obj).get("app.kubernetes.io/component", "")


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------------------------------------- GPU placement


def test_gpu_resources_only_on_triton(helm, k8s, values_set):
    objects = helm.objects(values_set)
    gpu_enabled = values_set != "cpu-only"
    for owner, spec in k8s.pod_specs(objects):
        component = _component(owner, k8s)
        for c in _containers(spec):
            res = c.get("resources", {})
            gpu_keys = [k for part in ("requests", "limits") for k in res.get(part, {}) if "gpu" in k]
            if component != "triton" or not gpu_enabled:
                assert not gpu_keys, f"{owner['metadata']['name']}/{c['name']} asks for a GPU"
        if component != "triton":
            tolerations = spec.get("tolerations", [])
            assert not any("gpu" in t.get("key", "") for t in tolerations), owner["metadata"]["name"]
            assert not any("gpu" in k for k in spec.get("nodeSelector", {})), owner["metadata"]["name"]
    tritons = [o for o, _ in k8s.pod_specs(objects) if _component(o, k8s) == "triton"]
    assert tritons
    for deploy in tritons:
        spec = deploy["spec"]["template"]["spec"]
        main = next(c for c in spec["containers"] if c["name"] == "triton")
        if gpu_enabled:
            assert main["resources"]["limits"][GPU] == 1 and main["resources"]["requests"][GPU] == 1
            # No GPU Feature Discovery label needed: the GPU request and the toleration place the pod.
            assert "nodeSelector" not in spec
            assert main["resources"]["requests"]["ephemeral-storage"] == "8Gi"
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            config = "plan" if values_set == "keda" else "gpu"  # keda set: prebuilt TensorRT plans
            assert f"--model-config-name={config}" in main["args"]
            assert "--allow-gpu-metrics=true" in main["args"]
        else:
            assert GPU not in main["resources"].get("limits", {})
            assert not any(a.startswith("--model-config-name") for a in main["args"])
            assert "--allow-gpu-metrics=false" in main["args"] and "--pinned-memory-pool-byte-size=0" in main["args"]


def test_triton_platform_options(helm, k8s):
    """priorityClassName, runtimeClassName, a node selector for a GPU type, and extra volumes reach the pod."""
    deploy = k8s.named(helm.template(sets=(
        "triton.priorityClassName=gpu-high", "triton.runtimeClassName=nvidia",
        "triton.nodeSelector.cloud\\.google\\.com/gke-accelerator=nvidia-l4",
        "triton.extraVolumes[0].name=engines", "triton.extraVolumes[0].persistentVolumeClaim.claimName=trt",
        "triton.extraVolumeMounts[0].name=engines", "triton.extraVolumeMounts[0].mountPath=/engines")).objects,
        "Deployment", f"{R}-triton")
    spec = deploy["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "gpu-high" and spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"name": "engines", "persistentVolumeClaim": {"claimName": "trt"}} in spec["volumes"]
    main = next(c for c in spec["containers"] if c["name"] == "triton")
    assert {"name": "engines", "mountPath": "/engines"} in main["volumeMounts"]


def test_tensorrt_plans_built_on_the_node_gpu(helm, k8s):
    deploy = k8s.named(helm.objects("keda"), "Deployment", f"{R}-triton")
    inits = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["initContainers"]}
    assert list(inits) == ["fetch-models", "prepare-models", "build-tensorrt"]
    trt = inits["build-tensorrt"]
    assert trt["command"] == ["python", "-m", "export", "--tensorrt", "--if-missing", "--repository", "/models"]
    assert trt["resources"]["limits"][GPU] == 1 and trt["resources"]["requests"][GPU] == 1
    assert "/models" in {m["mountPath"] for m in trt["volumeMounts"]}
    # The plans are served by configs/plan.pbtxt, and the version policy goes into that config too.
    main = deploy["spec"]["template"]["spec"]["containers"][0]
    assert "--model-config-name=plan" in main["args"] and "--config-name=plan" in inits["prepare-models"]["command"]
    for model in ("face_detector", "face_embedder", "face_embedder_dlib"):
        assert (REPO / "model_repository" / model / "configs" / "plan.pbtxt").is_file()
    defaults = k8s.named(helm.objects(), "Deployment", f"{R}-triton")
    assert "build-tensorrt" not in [c["name"] for c in defaults["spec"]["template"]["spec"]["initContainers"]]


# ------------------------------------------------------------------------------------------- references


def test_services_select_pods_and_ports_exist(helm, k8s, values_set):
    objects = helm.objects(values_set)
    pods = k8s.pod_specs(objects)
    for svc in k8s.by_kind(objects, "Service"):
        selector = svc["spec"]["selector"]
        matched = [(o, s) for o, s in pods if o["kind"] == "Deployment" and k8s.selects(selector, k8s.pod_labels(o))]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {len(matched)} Deployments"
        ports = {p["name"] for c in matched[0][1]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: no container port {port['targetPort']}"


def test_pdbs_select_exactly_one_deployment(helm, k8s, values_set):
    objects = helm.objects(values_set)
    pdbs = k8s.by_kind(objects, "PodDisruptionBudget")
    assert {p["metadata"]["name"] for p in pdbs} == {f"{R}-gateway", f"{R}-triton"}
    for pdb in pdbs:
        sel = pdb["spec"]["selector"]["matchLabels"]
        matched = [o for o in k8s.by_kind(objects, "Deployment") if k8s.selects(sel, k8s.pod_labels(o))]
        assert [m["metadata"]["name"] for m in matched] == [pdb["metadata"]["name"]]


def test_deployment_selectors_match_their_pods_and_nothing_else(helm, k8s, values_set):
    objects = helm.objects(values_set)
    deployments = k8s.by_kind(objects, "Deployment")
    for d in deployments:
        sel = d["spec"]["selector"]["matchLabels"]
        assert k8s.selects(sel, k8s.pod_labels(d))
        others = [o["metadata"]["name"] for o in deployments if o is not d and k8s.selects(sel, k8s.pod_labels(o))]
        assert not others, f"{d['metadata']['name']}'s selector also matches {others}"


def test_network_policies_select_existing_pods(helm, k8s, values_set):
    objects = helm.objects(values_set)
    policies = k8s.by_kind(objects, "NetworkPolicy")
    if values_set == "monitoring-off":
        assert not policies
        return
    pods = k8s.pod_specs(objects)
    for pol in policies:
        sel = pol["spec"]["podSelector"]["matchLabels"]
        if pol["metadata"]["name"] == f"{R}-milvus":
            # Pods of the separate Milvus release (not rendered here): the official chart's labels for `milvus`.
            assert sel == {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": "milvus"}
            continue
        targets = [(o, s) for o, s in pods if k8s.selects(sel, k8s.pod_labels(o))]
        assert targets, f"NetworkPolicy {pol['metadata']['name']} selects no pod"
        target_ports = {p["name"] for _, s in targets for c in s["containers"] for p in c.get("ports", [])}
        for rule in pol["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert port["port"] in target_ports, f"{pol['metadata']['name']}: port {port['port']}"
            for peer in rule["from"]:
                if "podSelector" in peer:
                    peer_sel = peer["podSelector"]["matchLabels"]
                    assert any(k8s.selects(peer_sel, k8s.pod_labels(o)) for o, _ in pods), peer_sel
        for rule in pol["spec"].get("egress", []):
            # A named port must exist on the destination pods; a pod peer (other than cluster DNS, in any
            # namespace) must select pods of this release.
            peers = [p for p in rule.get("to", []) if "namespaceSelector" not in p]
            for peer in peers:
                dest = [s for o, s in pods if k8s.selects(peer["podSelector"]["matchLabels"], k8s.pod_labels(o))]
                assert dest, f"{pol['metadata']['name']}: egress peer selects no pod"
                dest_ports = {p["name"] for s in dest for c in s["containers"] for p in c.get("ports", [])}
                named = {p["port"] for p in rule.get("ports", []) if isinstance(p["port"], str)}
                assert named <= dest_ports, f"{pol['metadata']['name']}: egress ports {named - dest_ports}"
    assert (values_set == "milvus") == any(p["metadata"]["name"] == f"{R}-milvus" for p in policies)


def test_network_policy_semantics(helm, k8s):
    objects = helm.objects("milvus")
    pols = {p["metadata"]["name"]: p for p in k8s.by_kind(objects, "NetworkPolicy")}
    gateway_pods = {"app.kubernetes.io/name": "facestack", "app.kubernetes.io/instance": "fs",
                    "app.kubernetes.io/component": "gateway"}
    # Only the gateway reaches Triton's inference ports; Prometheus only its metrics port.
    triton = pols[f"{R}-triton"]["spec"]["ingress"]
    inference = [r for r in triton if {p["port"] for p in r["ports"]} & {"http", "grpc"}]
    assert len(inference) == 1 and inference[0]["from"] == [{"podSelector": {"matchLabels": gateway_pods}}]
    assert all({p["port"] for p in r["ports"]} == {"metrics"} for r in triton if r is not inference[0])
    # Only the gateway reaches Milvus' client port.
    milvus = pols[f"{R}-milvus"]["spec"]["ingress"]
    client = [r for r in milvus if any(p["port"] == 19530 for p in r.get("ports", []))]
    assert len(client) == 1 and client[0]["from"] == [{"podSelector": {"matchLabels": gateway_pods}}]
    # The ingress controller reaches only the gateway.
    for name, pol in pols.items():
        peers = [peer for r in pol["spec"].get("ingress", []) for peer in r["from"]]
        ingress_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        has_ingress_ns = ingress_ns in peers
        assert has_ingress_ns == (name == f"{R}-gateway"), name


def test_egress_policies_for_default_deny(helm, k8s):
    """With networkPolicy.egress: the gateway reaches DNS, the Triton pods' inference ports and Milvus' port only;
    the helm test pod DNS and the gateway only. Off by default (it restricts egress where nothing else does)."""
    assert not [p for p in k8s.by_kind(helm.objects(), "NetworkPolicy") if "egress" in p["spec"]]
    pols = {p["metadata"]["name"]: p["spec"] for p in k8s.by_kind(helm.objects("milvus"), "NetworkPolicy")}
    gateway = pols[f"{R}-gateway-egress"]
    assert gateway["policyTypes"] == ["Egress"]
    dns, triton, milvus = gateway["egress"]
    assert dns["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert triton["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"
    assert {p["port"] for p in triton["ports"]} == {"grpc", "http"}
    assert milvus == {"ports": [{"port": 19530, "protocol": "TCP"}]}
    test_pod = pols[f"{R}-helm-test-egress"]["egress"]
    assert test_pod[1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


def test_secret_and_configmap_references_resolve(helm, k8s, values_set):
    objects = helm.objects(values_set)
    made = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # Secrets the operator creates (documented in NOTES.txt / values), never by the chart.
    external = {"facestack-api-keys", "milvus-credentials", "facestack-tls", f"{R}-api-keys", f"{R}-test-api-key",
                "facestack-models"}
    for owner, spec in k8s.pod_specs(objects):
        refs = []
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                refs.append(("Secret", vol["secret"]["secretName"]))
            if "configMap" in vol:
                refs.append(("ConfigMap", vol["configMap"]["name"]))
            if "persistentVolumeClaim" in vol:
                refs.append(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]))
        for c in _containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append(("Secret", ref["name"]))
        for kind, name in refs:
            assert (kind, name) in made or name in external, f"{owner['metadata']['name']}: {kind} {name} missing"
    if values_set == "milvus":  # chart-made Secrets when the values carry the content
        assert ("Secret", f"{R}-api-keys") in made and ("Secret", f"{R}-milvus") in made
    else:
        assert not k8s.by_kind(objects, "Secret")


def test_gateway_wiring(helm, k8s, values_set):
    objects = helm.objects(values_set)
    services = {s["metadata"]["name"]: s for s in k8s.by_kind(objects, "Service")}
    for deploy in k8s.by_kind(objects, "Deployment"):
        if _component(deploy, k8s) != "gateway":
            continue
        spec = deploy["spec"]["template"]["spec"]
        env = _env(spec["containers"][0])
        # dns:///<service>.<namespace>.svc.cluster.local:<port> of a headless Triton Service: the gateway's gRPC
        # channel resolves every ready Triton pod and balances over them (round_robin).
        target = env["FACESTACK_TRITON_GRPC_URL"]["value"]
        assert target.startswith("dns:///"), target
        fqdn, port = target.removeprefix("dns:///").split(":")
        host, namespace, rest = fqdn.split(".", 2)
        assert namespace == k8s.NAMESPACE and rest == "svc.cluster.local"
        assert host in services and services[host]["metadata"]["labels"]["app.kubernetes.io/component"] == "triton"
        assert services[host]["spec"]["clusterIP"] == "None" and "type" not in services[host]["spec"]
        assert {"name": "grpc", "port": int(port), "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"} \
            in services[host]["spec"]["ports"]
        keys_file = env["FACESTACK_API_KEYS_FILE"]["value"]
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert keys_file.rsplit("/", 1)[0] in mounts and mounts[keys_file.rsplit("/", 1)[0]]["readOnly"]
        assert env["PORT"]["value"] == "8000" and env["FACESTACK_DATA_DIR"]["value"] == "/data"
        assert env["FACESTACK_AUDIT_LOG"]["value"] == "-"
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > int(env["FACESTACK_GATEWAY_SHUTDOWN_TIMEOUT_S"]["value"]) + 5
        if values_set == "milvus":
            assert env["MILVUS_URI"]["value"] == "http://milvus:19530"
            assert env["MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": f"{R}-milvus", "key": "token"}
        elif values_set == "canary":
            assert env["MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "milvus-credentials"
        else:
            assert env["MILVUS_URI"]["value"] == "http://milvus.milvus.svc.cluster.local:19530"
            assert "MILVUS_TOKEN" not in env


# ------------------------------------------------------------------------------------------- probes, security


def test_probes_everywhere(helm, k8s, values_set):
    for deploy in k8s.by_kind(helm.objects(values_set), "Deployment"):
        for c in deploy["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{deploy['metadata']['name']}/{c['name']} has no {probe}"
            if c["name"] == "triton":
                # Ready: the pipeline model's endpoint, never the server-wide one (one failed model keeps that at
                # 400). Alive: the server process answering (a busy or reloading model must not get it killed).
                assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")} == {
                    "/v2/models/face_pipeline/ready"}
                assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
            else:
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert all(c[p]["httpGet"]["port"] == "http" for p in ("startupProbe", "readinessProbe", "livenessProbe"))


def test_security_context_everywhere(helm, k8s, values_set):
    objects = helm.objects(values_set)
    for owner, spec in k8s.pod_specs(objects):
        name = owner["metadata"]["name"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        # No Service-link variables: a Service "facestack-triton" would inject FACESTACK_TRITON_* into the
        # gateway's environment, the prefix of its own settings.
        assert spec["enableServiceLinks"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert sc["capabilities"] == {"drop": ["ALL"]}, f"{name}/{c['name']}"
            assert not sc.get("privileged"), f"{name}/{c['name']}"
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}/{c['name']}: read-only root needs a writable /tmp"
            assert c.get("resources", {}).get("requests"), f"{name}/{c['name']} has no resource requests"
    for sa in k8s.by_kind(objects, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_triton_pod_shape(helm, k8s):
    deploy = k8s.named(helm.objects(), "Deployment", f"{R}-triton")
    spec = deploy["spec"]["template"]["spec"]
    main = next(c for c in spec["containers"] if c["name"] == "triton")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/models"]]["emptyDir"]["sizeLimit"] == "20Gi"
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert main["command"] == ["tritonserver"]
    assert "--model-repository=/models" in main["args"] and "--strict-readiness=true" in main["args"]
    # Graceful termination: preStop sleep, then Triton drains in-flight requests within the grace period.
    exit_timeout = int(next(a for a in main["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > exit_timeout + pre_stop
    # The init containers fill the same volume Triton reads.
    for init in spec["initContainers"]:
        assert "/models" in {m["mountPath"] for m in init["volumeMounts"]}
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_model_sources(helm, k8s):
    def fetch(values_set):
        deploy = k8s.named(helm.objects(values_set), "Deployment", f"{R}-triton")
        spec = deploy["spec"]["template"]["spec"]
        return spec, next(c for c in spec["initContainers"] if c["name"] == "fetch-models")

    spec, init = fetch("defaults")
    assert init["image"] == "facestack-triton:0.1.0" and 'cp -R "$MODEL_SOURCE"/. /models/' in init["args"][0]
    spec, init = fetch("external-metric")  # source pvc
    claim = next(v for v in spec["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {"claimName": "facestack-models", "readOnly": True}
    assert {"name": claim["name"], "mountPath": "/source", "readOnly": True, "subPath": "model_repository"} \
        in init["volumeMounts"]
    spec, init = fetch("cpu-only")  # source export
    assert "python -m export --if-missing --repository /models" in init["args"][0]
    assert _env(init)["FACESTACK_CACHE_DIR"]["value"].startswith("/tmp/")  # read-only root filesystem


def test_topology_spread(helm, k8s):
    for deploy in k8s.by_kind(helm.objects(), "Deployment"):
        spec = deploy["spec"]["template"]["spec"]
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for t in spec["topologySpreadConstraints"]:
            assert t["labelSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


# ------------------------------------------------------------------------------------------- autoscaling


def _adapter_config(objects, k8s) -> dict:
    cm = k8s.named(objects, "ConfigMap", f"{R}-adapter-rules")
    return yaml.safe_load(cm["data"]["config.yaml"])


def _metric_names(promql: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by `{`, minus aggregation keywords."""
    return set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", promql)) - {"by", "without", "on", "ignoring"}


def _check_rule(rule: dict, metric: str, known: frozenset) -> None:
    series = _metric_names(rule["seriesQuery"])
    assert len(series) == 1 and series <= known, rule["seriesQuery"]
    assert re.search(rule["name"]["matches"], next(iter(series))), "name.matches does not match the series"
    assert rule["name"]["as"] == metric
    assert _metric_names(rule["metricsQuery"]) <= known, rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_triton_hpa_metric_matches_adapter_rules_and_triton(helm, k8s, values_set):
    objects = helm.objects(values_set)
    hpas = {h["metadata"]["name"]: h for h in k8s.by_kind(objects, "HorizontalPodAutoscaler")}
    deployments = {d["metadata"]["name"]: d for d in k8s.by_kind(objects, "Deployment")}
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert "replicas" not in deployments[target["name"]]["spec"], "the HPA owns replicas"
        # The canary autoscales only where its overrides turn it on (the canary set: its Triton).
        assert "-canary" not in target["name"] or (values_set == "canary" and target["name"] == f"{R}-triton-canary")
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] > behavior["scaleUp"]["stabilizationWindowSeconds"]
    triton_hpa = hpas.get(f"{R}-triton")
    scaled = k8s.by_kind(objects, "ScaledObject")
    if values_set == "monitoring-off":
        assert triton_hpa is None and not scaled
        assert deployments[f"{R}-triton"]["spec"]["replicas"] == 2
        return
    if values_set == "keda":
        assert triton_hpa is None and len(scaled) == 1  # KEDA makes its own HPA
        return
    assert not scaled
    metric, backlog = triton_hpa["spec"]["metrics"]
    config = _adapter_config(objects, k8s)
    # The second metric: calls the gateways that call this Triton hold back for it (grows past saturation).
    assert backlog["type"] == "External" and backlog["external"]["target"]["type"] == "AverageValue"
    (callers,) = backlog["external"]["metric"]["selector"]["matchExpressions"]
    assert callers["key"] == "service" and callers["operator"] == "In"
    services = {s["metadata"]["name"] for s in k8s.by_kind(objects, "Service")}
    assert set(callers["values"]) <= services and f"{R}-gateway" in callers["values"]
    (backlog_rule,) = [r for r in config["externalRules"] if r["name"]["as"] == backlog["external"]["metric"]["name"]]
    _check_rule(backlog_rule, "facestack_triton_backlog_calls", k8s.GATEWAY_METRICS)
    if values_set == "external-metric":
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"service": f"{R}-triton"}
        assert f"{R}-triton" in {s["metadata"]["name"] for s in k8s.by_kind(objects, "Service")}
        assert metric["external"]["target"] == {"type": "Value", "value": "0.050"}
        rules = [r for r in config["externalRules"] if r["name"]["as"] == metric["external"]["metric"]["name"]]
    else:
        assert metric["type"] == "Pods"
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "0.050"}
        rules = [r for r in config["rules"] if r["name"]["as"] == metric["pods"]["metric"]["name"]]
        assert rules[0]["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert len(rules) == 1, "exactly one adapter rule must serve the HPA's metric"
    _check_rule(rules[0], "facestack_triton_queue_seconds", k8s.TRITON_METRICS)
    query = rules[0]["metricsQuery"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    models = set(re.findall(r'model=~"([^"]+)"', query)[0].split("|"))
    assert models == {"face_pipeline", "face_detector", "face_embedder", "face_embedder_dlib"}, \
        "the pipeline holds the backlog; every embedder counts"


def test_gateway_hpa_and_adapter(helm, k8s):
    objects = helm.objects("keda")  # requestsPerSecond on
    hpa = k8s.named(objects, "HorizontalPodAutoscaler", f"{R}-gateway")
    types = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert types["Resource"]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert types["Pods"]["pods"]["metric"]["name"] == "facestack_http_requests_per_second"
    # The keda values set turns the adapter ConfigMap off; the rule shipped in the default render serves it.
    config = _adapter_config(helm.objects(), k8s)
    rule = next(r for r in config["rules"] if r["name"]["as"] == "facestack_http_requests_per_second")
    _check_rule(rule, "facestack_http_requests_per_second", k8s.GATEWAY_METRICS)
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_keda_scaled_object(helm, k8s):
    objects = helm.objects("keda")
    so = k8s.named(objects, "ScaledObject", f"{R}-triton")
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{R}-triton"}
    assert "replicas" not in k8s.named(objects, "Deployment", f"{R}-triton")["spec"]
    assert so["spec"]["minReplicaCount"] == 2 and so["spec"]["maxReplicaCount"] == 12
    trigger, backlog = so["spec"]["triggers"]
    assert backlog["type"] == "prometheus" and backlog["metricType"] == "AverageValue"
    assert _metric_names(backlog["metadata"]["query"]) <= k8s.GATEWAY_METRICS
    assert f'service=~"{R}-gateway"' in backlog["metadata"]["query"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    assert trigger["authenticationRef"] == {"name": "prometheus-auth"}
    meta = trigger["metadata"]
    assert meta["threshold"] == "0.050" and meta["serverAddress"].startswith("http://prometheus-operated")
    assert _metric_names(meta["query"]) <= k8s.TRITON_METRICS
    assert f'service="{R}-triton"' in meta["query"] and 'namespace="facestack"' in meta["query"]
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert not [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("adapter-rules")]


# ------------------------------------------------------------------------------------------- canary


def test_canary_split(helm, k8s):
    objects = helm.objects("canary")
    ingresses = {i["metadata"]["name"]: i for i in k8s.by_kind(objects, "Ingress")}
    stable, canary = ingresses[R], ingresses[f"{R}-canary"]
    ann = canary["metadata"]["annotations"]
    assert ann == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "20",
        "nginx.ingress.kubernetes.io/canary-weight-total": "100",
        "nginx.ingress.kubernetes.io/canary-by-header": "X-Facestack-Canary",
    }
    assert "nginx.ingress.kubernetes.io/canary" not in stable["metadata"].get("annotations", {})
    # ingress-nginx pairs a canary with the stable Ingress of the same host and path.
    assert stable["spec"]["rules"][0]["host"] == canary["spec"]["rules"][0]["host"]
    paths = [ing["spec"]["rules"][0]["http"]["paths"][0]["path"] for ing in (stable, canary)]
    assert paths[0] == paths[1]
    assert stable["spec"]["ingressClassName"] == canary["spec"]["ingressClassName"] == "nginx"
    services = {s["metadata"]["name"] for s in k8s.by_kind(objects, "Service")}
    for ing, backend in ((stable, f"{R}-gateway"), (canary, f"{R}-gateway-canary")):
        svc = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert svc == {"name": backend, "port": {"name": "http"}} and backend in services
        assert ing["spec"]["tls"] == [{"hosts": ["facestack.example.com"], "secretName": "facestack-tls"}]
    deploys = {d["metadata"]["name"]: d for d in k8s.by_kind(objects, "Deployment")}
    assert set(deploys) == {f"{R}-gateway", f"{R}-gateway-canary", f"{R}-triton", f"{R}-triton-canary"}
    image = {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in deploys.items()}
    assert image[f"{R}-gateway"] == "facestack-gateway:0.1.0"
    assert image[f"{R}-gateway-canary"] == "facestack-gateway:0.2.0"
    assert image[f"{R}-triton"] == "facestack-triton:0.1.0" and image[f"{R}-triton-canary"] == "facestack-triton:0.2.0"
    # Each gateway track calls its own Triton track.
    for track, triton in (("gateway", "triton"), ("gateway-canary", "triton-canary")):
        env = _env(deploys[f"{R}-{track}"]["spec"]["template"]["spec"]["containers"][0])
        assert env["FACESTACK_TRITON_GRPC_URL"]["value"] == f"dns:///{R}-{triton}.facestack.svc.cluster.local:8001"
        assert env["FACESTACK_TRACK"]["value"] == ("canary" if "canary" in track else "stable")
    # Model-version canary: the version policy each Triton track applies.
    for name, versions in ((f"{R}-triton", [1]), (f"{R}-triton-canary", [2])):
        inits = deploys[name]["spec"]["template"]["spec"]["initContainers"]
        prep = next(c for c in inits if c["name"] == "prepare-models")
        arg = next(a for a in prep["command"] if a.startswith("--version-policy="))
        assert json.loads(arg.split("=", 1)[1]) == {"face_detector": {"specific": {"versions": versions}}}
    # The canary gateway has a fixed replica; the canary Triton has its own HPA on its own pods' queue time
    # (the overrides turn it on), between 1 and 4 replicas.
    assert deploys[f"{R}-gateway-canary"]["spec"]["replicas"] == 1
    assert "replicas" not in deploys[f"{R}-triton-canary"]["spec"]
    hpa = k8s.named(objects, "HorizontalPodAutoscaler", f"{R}-triton-canary")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{R}-triton-canary"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "facestack_triton_queue_seconds"
    hpas = {h["metadata"]["name"] for h in k8s.by_kind(objects, "HorizontalPodAutoscaler")}
    assert f"{R}-gateway-canary" not in hpas


def test_no_canary_objects_by_default(helm, k8s):
    names = [o["metadata"]["name"] for o in helm.objects()]
    assert not [n for n in names if "canary" in n]


def test_canary_gateway_can_call_the_stable_triton(helm, k8s):
    objects = helm.objects("canary", sets=("canary.triton.enabled=false",))
    deploys = {d["metadata"]["name"] for d in k8s.by_kind(objects, "Deployment")}
    assert deploys == {f"{R}-gateway", f"{R}-gateway-canary", f"{R}-triton"}
    canary = k8s.named(objects, "Deployment", f"{R}-gateway-canary")
    assert _env(canary["spec"]["template"]["spec"]["containers"][0])["FACESTACK_TRITON_GRPC_URL"]["value"] == \
        f"dns:///{R}-triton.facestack.svc.cluster.local:8001"


@pytest.mark.parametrize("weight", [0, 100])
def test_canary_weight_bounds(helm, k8s, weight):
    objects = helm.objects("canary", sets=(f"canary.weight={weight}",))
    canary = k8s.named(objects, "Ingress", f"{R}-canary")
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == str(weight)


# ------------------------------------------------------------------------------------------- monitoring


def test_service_monitors_select_services_and_ports(helm, k8s, values_set):
    objects = helm.objects(values_set)
    monitors = k8s.by_kind(objects, "ServiceMonitor")
    if values_set == "monitoring-off":
        assert not monitors and not k8s.by_kind(objects, "PrometheusRule")
        assert not [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]
        return
    assert {m["metadata"]["name"] for m in monitors} == {f"{R}-gateway", f"{R}-triton"}
    services = k8s.by_kind(objects, "Service")
    for mon in monitors:
        assert mon["spec"]["namespaceSelector"] == {"matchNames": [k8s.NAMESPACE]}
        selected = [s for s in services if k8s.selects(mon["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        tracks = {s["metadata"]["labels"]["facestack.io/track"] for s in selected}
        assert tracks == ({"stable", "canary"} if values_set == "canary" else {"stable"})
        for endpoint in mon["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            for svc in selected:
                assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    triton = k8s.named(monitors, "ServiceMonitor", f"{R}-triton")
    assert triton["spec"]["endpoints"][0]["port"] == "metrics"


def test_dashboard(helm, k8s):
    objects = helm.objects()
    cm = k8s.named(objects, "ConfigMap", f"{R}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["facestack.json"])
    rule = k8s.named(objects, "PrometheusRule", R)
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    known = k8s.TRITON_METRICS | k8s.GATEWAY_METRICS | k8s.CLUSTER_METRICS | recorded
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        assert _metric_names(expr) <= known, expr


def test_helm_test_hook(helm, k8s):
    objects = helm.objects("canary")
    pod = k8s.named(objects, "Pod", f"{R}-helm-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    services = {s["metadata"]["name"] for s in k8s.by_kind(objects, "Service")}
    urls = container["args"]
    assert urls == [f"http://{R}-gateway:8000", f"http://{R}-gateway-canary:8000"], "both tracks are checked"
    assert all(u.removeprefix("http://").split(":")[0] in services for u in urls)
    # The ConfigMap carries the script only: no photos in the chart. The pod runs the gateway image (same image,
    # tag and pull policy as the stable gateway Deployment), which holds the registry photos the script reads
    # from FACESTACK_CACHE_DIR, the path docker/gateway.Dockerfile fetched them into.
    cm = k8s.named(objects, "ConfigMap", f"{R}-helm-test")
    assert "binaryData" not in cm and set(cm["data"]) == {"check.py"}
    assert cm["data"]["check.py"] == (REPO / "helm/facestack/files/scripts/helm_test_check.py").read_text()
    gateway = k8s.named(objects, "Deployment", f"{R}-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == gateway["image"] == "facestack-gateway:0.1.0"
    assert container["imagePullPolicy"] == gateway["imagePullPolicy"]
    assert container["command"] == ["python", "/helm-test/check.py"]
    dockerfile = (REPO / "docker" / "gateway.Dockerfile").read_text()
    cache_dir = _env(container)["FACESTACK_CACHE_DIR"]["value"]
    assert f"FACESTACK_CACHE_DIR={cache_dir}" in dockerfile and cache_dir.startswith("/opt/facestack/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(m["mountPath"] == cache_dir or cache_dir.startswith(m["mountPath"] + "/")
                   for m in container["volumeMounts"]), "the image's photos are not hidden by a volume"
    tagged = k8s.named(helm.objects(sets=("gateway.image.tag=9.9.9",)), "Pod", f"{R}-helm-test")
    assert tagged["spec"]["containers"][0]["image"] == "facestack-gateway:9.9.9"
    assert _env(container)["FACESTACK_TEST_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{R}-test-api-key"
    # The gateway NetworkPolicy lets the test pod in.
    policy = k8s.named(objects, "NetworkPolicy", f"{R}-gateway")
    peers = [p["podSelector"]["matchLabels"]
             for r in policy["spec"]["ingress"] for p in r["from"] if "podSelector" in p]
    assert any(k8s.selects(sel, pod["metadata"]["labels"]) for sel in peers)


def test_ingress_exposes_only_the_api(helm, k8s, values_set):
    """The Ingress routes /v1 only: /metrics, /readyz, /healthz and /docs stay inside the cluster."""
    for ing in k8s.by_kind(helm.objects(values_set), "Ingress"):
        paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
        assert [(p["path"], p["pathType"]) for p in paths] == [("/v1", "Prefix")]


def test_canary_version_policy_replaces_the_stable_one(helm, k8s):
    """An overridden policy replaces the model's stable one: merged, `latest` and `specific` would both be set,
    and Triton rejects a version_policy with two choices."""
    objects = helm.template(sets=(
        "canary.enabled=true", "triton.modelRepository.versionPolicy.face_detector.latest.num_versions=1",
        "canary.triton.overrides.modelRepository.versionPolicy.face_detector.specific.versions={2}")).objects
    deploys = {d["metadata"]["name"]: d for d in k8s.by_kind(objects, "Deployment")}
    policies = {}
    for name in (f"{R}-triton", f"{R}-triton-canary"):
        prep = next(c for c in deploys[name]["spec"]["template"]["spec"]["initContainers"]
                    if c["name"] == "prepare-models")
        arg = next(a for a in prep["command"] if a.startswith("--version-policy="))
        policies[name] = json.loads(arg.split("=", 1)[1])
    assert policies[f"{R}-triton"] == {"face_detector": {"latest": {"num_versions": 1}}}
    assert policies[f"{R}-triton-canary"] == {"face_detector": {"specific": {"versions": [2]}}}
