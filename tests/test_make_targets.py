"""Every `make X` the README and docs/ name exists: `make -n X` (a dry run) succeeds."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from facestack.artifacts import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
# `make X` inside inline code or a fenced block (prose like "to make the change" is not a command).
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_MAKE = re.compile(r"(?:^|[\s;&|(`])make\s+(?:[A-Z_]+=\S*\s+)*([a-z][\w-]*)", re.MULTILINE)


def named_targets() -> dict[str, list[str]]:
    """Target -> the files that name it."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for code in _CODE.findall(doc.read_text()):
            for target in _MAKE.findall(code):
                found.setdefault(target, []).append(str(doc.relative_to(REPO_ROOT)))
    return found


def test_the_docs_name_the_main_targets() -> None:
    # The scan must see the targets the README's command table lists, or the test below checks nothing.
    assert {"run", "test", "bench", "bench-gateway", "eval", "loadtest"} <= set(named_targets())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", sorted(named_targets()))
def test_named_make_target_exists(target: str) -> None:
    proc = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"`make {target}` (named in {named_targets()[target]}): {proc.stderr.strip()}"
