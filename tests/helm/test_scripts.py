"""The scripts the chart ships into pods, run here: the init container's version-policy step and the
`helm test` check (against a local stand-in gateway)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facestack import artifacts

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "helm" / "facestack" / "files" / "scripts"
# What the `helm test` pod sends: two registry photos of one person (never committed; see docker/gateway.Dockerfile).
PHOTOS = {"probe": "obama.jpg", "reference": "obama2.jpg"}

CONFIG = """name: "face_detector"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 640, 640 ] } ]
output [ { name: "cls_8" data_type: TYPE_FP32 dims: [ -1, 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


@pytest.fixture()
def repository(tmp_path) -> Path:
    """A two-version face_detector with a CPU config and a GPU alternative (configs/gpu.pbtxt)."""
    model = tmp_path / "repo" / "face_detector"
    for version in ("1", "2"):
        (model / version).mkdir(parents=True)
        (model / version / "model.onnx").write_bytes(b"onnx")
    (model / "config.pbtxt").write_text(CONFIG.replace("max_batch_size: 8", 'backend: "python"\nmax_batch_size: 8'))
    (model / "configs").mkdir()
    (model / "configs" / "gpu.pbtxt").write_text(
        CONFIG.replace("max_batch_size: 8", 'backend: "onnxruntime"\nmax_batch_size: 8')
        + "version_policy: { latest: { num_versions: 1 } }\n")
    (tmp_path / "repo" / "face_pipeline" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "face_pipeline" / "config.pbtxt").write_text('name: "face_pipeline"\nbackend: "python"\n')
    return tmp_path / "repo"


@pytest.fixture(scope="module")
def prepare_models():
    spec = importlib.util.spec_from_file_location("facestack_prepare_models", SCRIPTS / "prepare_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def prepare(prepare_models):
    """Run the script's main() in-process (the last test runs it as the init container does, as a process)."""

    def run(repository: Path, policy, config_name: str = "gpu") -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = prepare_models.main([f"--repository={repository}", f"--config-name={config_name}",
                                        f"--version-policy={json.dumps(policy)}"])
        return subprocess.CompletedProcess([], code, out.getvalue(), err.getvalue())

    return run


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_version_policy_replaces_the_one_in_the_gpu_config(repository, prepare):
    proc = prepare(repository, {"face_detector": {"specific": {"versions": [1, 2]}}})
    assert proc.returncode == 0, proc.stderr
    gpu = _parse(repository / "face_detector" / "configs" / "gpu.pbtxt")
    assert list(gpu.version_policy.specific.versions) == [1, 2]
    assert gpu.backend == "onnxruntime" and gpu.max_batch_size == 8
    assert gpu.dynamic_batching.max_queue_delay_microseconds == 500
    cpu = _parse(repository / "face_detector" / "config.pbtxt")
    assert not cpu.HasField("version_policy"), "only the config Triton will read is changed"
    assert "face_detector: versions [1, 2]" in proc.stdout


def test_version_policy_without_config_name_uses_config_pbtxt(repository, prepare):
    proc = prepare(repository, {"face_detector": {"latest": {"num_versions": 2}}}, config_name="")
    assert proc.returncode == 0, proc.stderr
    assert _parse(repository / "face_detector" / "config.pbtxt").version_policy.latest.num_versions == 2


@pytest.mark.parametrize(("policy", "message"), [
    ({"face_detector": {"specific": {"versions": [3]}}}, "policy names versions [3] but the repository has [1, 2]"),
    ({"face_embedder": {"all": {}}}, "does not exist"),
    ({"face_detector": {"newest": {}}}, "bad version policy"),
    ({"face_detector": {}}, "names no policy"),
    ([1], "must be a JSON object"),
])
def test_bad_policies_fail_the_init_container(repository, prepare, policy, message):
    proc = prepare(repository, policy)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("config_name", ["gpu", "plan", ""])
def test_real_model_repository_configs(tmp_path, prepare, config_name):
    """The repository's own configs (CPU, gpu, plan) parse, and a policy rewrite keeps everything else."""
    import shutil

    repo = tmp_path / "model_repository"
    shutil.copytree(REPO / "model_repository", repo, ignore=shutil.ignore_patterns("*.onnx", "*.plan", "*.json"))
    models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    assert {"face_pipeline", "face_detector", "face_embedder", "face_embedder_dlib"} <= set(models)
    before = {m: _parse(_config(repo / m, config_name)) for m in models}
    policy = {m: {"specific": {"versions": [1]}} for m in models}
    proc = prepare(repo, policy, config_name=config_name)
    assert proc.returncode == 0, proc.stderr
    for m in models:
        after = _parse(_config(repo / m, config_name))
        assert list(after.version_policy.specific.versions) == [1]
        after.ClearField("version_policy")
        before[m].ClearField("version_policy")
        assert after == before[m], f"{m}: the rewrite changed more than the version policy"


def _config(model_dir: Path, config_name: str) -> Path:
    alt = model_dir / "configs" / f"{config_name}.pbtxt"
    return alt if config_name and alt.is_file() else model_dir / "config.pbtxt"


def test_empty_repository_fails(tmp_path, prepare):
    (tmp_path / "empty").mkdir()
    proc = prepare(tmp_path / "empty", {})
    assert proc.returncode == 1 and "missing or empty" in proc.stderr


def test_the_rendered_init_container_arguments_work(helm, k8s, repository):
    """The exact arguments the canary render passes to prepare-models are accepted by the script."""
    deploy = k8s.named(helm.objects("canary"), "Deployment", "fs-facestack-triton-canary")
    prep = next(c for c in deploy["spec"]["template"]["spec"]["initContainers"] if c["name"] == "prepare-models")
    assert prep["command"][:2] == ["python", "/opt/facestack-scripts/prepare_models.py"]
    args = [a.replace("/models", str(repository)) if a.startswith("--repository") else a for a in prep["command"][2:]]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "prepare_models.py"), *args],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list(_parse(repository / "face_detector" / "configs" / "gpu.pbtxt").version_policy.specific.versions) == [2]


# ---------------------------------------------------------------------------------------------- helm test check


class _Gateway(BaseHTTPRequestHandler):
    verify_body: dict = {"match": True, "score": 0.91}
    ready_after = 0
    received: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        cls = type(self)
        if self.path == "/readyz":
            cls.ready_after -= 1
            self.send_response(200 if cls.ready_after < 0 else 503)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        type(self).received.append((self.path, dict(self.headers), body))
        if self.headers.get("X-API-Key") != "k-123":
            self.send_response(401)
            self.end_headers()
            return
        payload = json.dumps(type(self).verify_body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def gateway():
    _Gateway.received = []
    _Gateway.ready_after = 1
    _Gateway.verify_body = {"match": True, "score": 0.91}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory) -> Path:
    """A FACESTACK_CACHE_DIR laid out as the gateway image's: the two extracted photos only, no downloads."""
    root = tmp_path_factory.mktemp("image-cache")
    for name in PHOTOS.values():
        src = artifacts.photo(name)  # pinned and sha256-checked; cached under the repository's .cache
        dest = root / src.relative_to(artifacts.cache_dir())
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return root


def _check(url: str, cache: Path, key: str = "k-123") -> subprocess.CompletedProcess:
    env = {"FACESTACK_TEST_API_KEY": key, "FACESTACK_CACHE_DIR": str(cache), "READY_TIMEOUT_S": "10",
           "READY_POLL_S": "0.05", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPTS / "helm_test_check.py"), url],
                          capture_output=True, text=True, check=False, timeout=60, env=env)


def _parts(body: bytes, boundary: str) -> dict[str, tuple[str, bytes]]:
    """name -> (filename, content) of a multipart/form-data body."""
    parts = {}
    for chunk in body.split(b"--" + boundary.encode())[1:-1]:
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields = dict(f.split("=", 1) for f in head.decode().split("\r\n")[0].split("; ")[1:])
        parts[fields["name"].strip('"')] = (fields["filename"].strip('"'), content.removesuffix(b"\r\n"))
    return parts


def test_helm_test_check_passes_and_sends_both_photos(gateway, image_cache):
    proc = _check(gateway, image_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    ((path, headers, body),) = _Gateway.received
    assert path == "/v1/verify" and headers["Content-Type"].startswith("multipart/form-data; boundary=")
    parts = _parts(body, headers["Content-Type"].split("boundary=", 1)[1])
    # Exactly the registry photos' bytes, two different photos (of one person).
    assert parts == {part: (name, artifacts.photo_bytes(name)) for part, name in PHOTOS.items()}
    assert parts["probe"][1] != parts["reference"][1]
    # Read from the image's cache as it is: nothing downloaded (the pod's root filesystem is read-only).
    assert not (image_cache / "downloads").exists()


def test_helm_test_check_fails_clearly_without_the_photos(gateway, tmp_path):
    """An image built without the photos: the fetcher cannot write its cache (here: a file, not a directory)."""
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")
    proc = _check(gateway, not_a_dir)
    assert proc.returncode != 0 and "cannot read the test photos" in proc.stderr
    assert _Gateway.received == [], "no verify call without the photos"


def test_helm_test_check_fails_on_a_mismatch(gateway, image_cache):
    _Gateway.verify_body = {"match": False, "score": 0.1}
    proc = _check(gateway, image_cache)
    assert proc.returncode != 0 and "match=False" in proc.stdout + proc.stderr


def test_helm_test_check_fails_on_a_bad_key(gateway, image_cache):
    proc = _check(gateway, image_cache, key="wrong")
    assert proc.returncode != 0 and "HTTP 401" in proc.stdout + proc.stderr


def test_helm_test_check_needs_a_key(gateway, image_cache):
    proc = _check(gateway, image_cache, key="")
    assert proc.returncode == 1 and "no API key" in proc.stderr
