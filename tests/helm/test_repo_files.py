"""Static checks of the files around the chart: the pinned tools, the Dockerfiles, the README values table,
and YAML hygiene. (The Dockerfiles cannot be built here: no Docker engine, no GPU, nvcr.io unreachable.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def test_tools_are_the_pinned_versions(tools, fetcher):
    helm_version = subprocess.run([str(tools["helm"]), "version", "--short"], capture_output=True, text=True,
                                  check=True).stdout
    assert helm_version.startswith(fetcher.HELM["version"] + "+")
    promtool_version = subprocess.run([str(tools["promtool"]), "--version"], capture_output=True, text=True,
                                      check=True).stdout
    assert f"version {fetcher.PROMTOOL['version']}" in promtool_version
    assert fetcher.tool_ok("helm") and fetcher.tool_ok("promtool")


def test_fetcher_refuses_a_tampered_binary(fetcher, tmp_path):
    """A binary that does not match its pinned sha256 is not accepted as present (it would be fetched again)."""
    fake = tmp_path / "helm"
    fake.write_bytes(b"#!/bin/sh\necho v3.17.2\n")
    fake.chmod(0o755)
    assert not fetcher.tool_ok("helm", tmp_path)
    with pytest.raises(fetcher.FetchError, match="sha256 mismatch"):
        fetcher._check("x", "0" * 64, "1" * 64)


def _dockerfile(name: str) -> str:
    return (DOCKER / name).read_text()


@pytest.mark.parametrize("name", ["gateway.Dockerfile", "triton.Dockerfile"])
def test_dockerfile_basics(name):
    text = _dockerfile(name)
    # Every COPY source exists in the repository (the build context is the repository root).
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M):
        for src in line.split()[:-1]:
            assert (REPO / src.rstrip("/")).exists(), f"{name}: COPY {src} does not exist"
    # Base images pinned to a version tag, never `latest`.
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.M):
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned {image}"
    # The runtime stage runs as the non-root uid the chart's podSecurityContext expects.
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] == "1000:1000", f"{name}: last USER is {users}"
    assert "install --no-compile -e ." in text, "installs the repository and its pinned dependencies"
    assert (DOCKER / f"{name}.dockerignore").is_file()


def test_triton_dockerfile_targets_the_triton_release_and_python_stub():
    text = _dockerfile("triton.Dockerfile")
    assert "ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3" in text
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in text  # pytriton 0.7.0 = Triton 2.51 = 24.10
    assert "python -m export" in text and "python3.11" in text
    assert "EXPOSE 8000 8001 8002" in text


def test_gateway_dockerfile_serves_the_gateway():
    text = _dockerfile("gateway.Dockerfile")
    assert 'CMD ["python", "-m", "gateway"]' in text and "EXPOSE 8000" in text
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text)


def test_gateway_image_holds_what_the_gateway_imports():
    """The gateway image copies some packages of the repository (not export/, the tools, the load test): the
    gateway's entry points, with the photo fetcher the helm test uses, import nothing of the repository outside
    them, and the operating points it falls back on are package data of one of them."""
    copied = {src.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+)$", _dockerfile("gateway.Dockerfile"),
                                                     flags=re.M) for src in line.split()[:-1]}
    assert "gateway" in copied and "export" not in copied
    code = ("import json, sys; import gateway.__main__, gateway.app, facestack.artifacts; print(json.dumps("
            "sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    ours = {Path(f).resolve().relative_to(REPO).parts[0] for f in json.loads(loaded.stdout)
            if Path(f).resolve().is_relative_to(REPO) and ".venv" not in Path(f).parts}
    assert ours and ours <= copied, f"the gateway imports {sorted(ours - copied)}, which its image does not copy"
    from facestack.settings import THRESHOLDS_FILE

    assert THRESHOLDS_FILE.parent.name in copied and THRESHOLDS_FILE.is_file()
    package_data = re.search(r"^facestack = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), flags=re.M)
    assert package_data and f'"{THRESHOLDS_FILE.name}"' in package_data.group(1)


def test_gateway_image_carries_the_helm_test_photos():
    """The `helm test` pod runs the gateway image and reads its photos from the image: the Dockerfile fetches
    exactly the photos the check script sends, with the pinned fetcher, into the cache dir it exports, under
    /opt/facestack (copied into the runtime stage), and drops the downloaded archives. No photo is committed."""
    from facestack import artifacts

    text = _dockerfile("gateway.Dockerfile")
    spec = importlib.util.spec_from_file_location(
        "facestack_helm_test_check", REPO / "helm" / "facestack" / "files" / "scripts" / "helm_test_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    fetched = re.search(r"from facestack\.artifacts import photo; \[photo\(n\) for n in \(([^)]*)\)\]", text)
    assert fetched, "the photos are fetched with facestack.artifacts.photo at build time"
    names = set(re.findall(r"'([^']+)'", fetched.group(1)))
    assert names == set(check.PHOTOS.values()) == {"obama.jpg", "obama2.jpg"}
    assert {artifacts.PHOTOS[n].package for n in names} == {"face-recognition"}  # one person, two photos
    _, build, runtime = re.split(r"^FROM ", text, flags=re.M)
    assert build.startswith("${PYTHON_IMAGE} AS build") and fetched.group(0) in build, "fetched in the build stage"
    for stage in (build, runtime):
        assert re.search(r"^\s*(ENV )?FACESTACK_CACHE_DIR=/opt/facestack/\.cache\b", stage, flags=re.M), stage[:60]
    assert "rm -rf /opt/facestack/.cache/downloads" in text
    assert "COPY --from=build /opt/facestack /opt/facestack" in text
    assert ".cache" in _dockerfile("gateway.Dockerfile.dockerignore").split(), "the host's cache stays out"
    images = [p for p in (REPO / "helm").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    assert images == [], f"photos committed to the chart: {images}"


def test_readme_values_table_is_current():
    spec = importlib.util.spec_from_file_location("facestack_values_table", REPO / "helm" / "tools" / "values_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python helm/tools/values_table.py --write"
    keys = [k for k, _ in module.documented_keys((REPO / "helm" / "facestack" / "values.yaml").read_text())]
    assert len(keys) > 100 and len(keys) == len(set(keys))


def test_yamllint_chart_files():
    config = ("{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
              "truthy: {check-keys: false}}}")
    files = [REPO / "helm" / "facestack" / f for f in ("Chart.yaml", "values.yaml")]
    files += sorted((REPO / "helm" / "facestack" / "ci").glob("*.yaml"))
    proc = subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", config, *map(str, files)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
