"""`helm lint --strict` over every values set, on the chart as committed (no dependencies to fetch)."""

from __future__ import annotations

import re

import pytest


def _findings(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"\[(WARNING|ERROR)\]", line)]


def test_lint_strict(helm, values_set):
    result = helm.lint(values_set)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _findings(result.stdout), result.stdout


@pytest.mark.parametrize("version", ["1.29.0", "1.35.0"])
def test_lint_strict_per_kube_version(helm, version):
    result = helm.run("lint", str(helm.chart), "--strict", "--kube-version", version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_as_committed_has_no_dependencies(k8s):
    """Nothing to fetch: `helm lint`/`template`/`install` work from a checkout, offline. Milvus is its own release
    (docs/helm.md); a stale charts/ or Chart.lock would make helm expect dependencies again."""
    import yaml

    meta = yaml.safe_load((k8s.CHART_SRC / "Chart.yaml").read_text())
    assert "dependencies" not in meta
    assert not (k8s.CHART_SRC / "charts").exists() and not (k8s.CHART_SRC / "Chart.lock").exists()


def test_packaged_chart_lints_and_renders(helm, tmp_path):
    """`helm package` (what a chart repository serves) lints strictly and renders like the directory."""
    packed = helm.run("package", str(helm.chart), "--destination", str(tmp_path))
    assert packed.returncode == 0, packed.stderr
    (archive,) = tmp_path.glob("facestack-*.tgz")
    lint = helm.run("lint", "--strict", str(archive))
    assert lint.returncode == 0 and not _findings(lint.stdout), lint.stdout + lint.stderr
    rendered = helm.template(chart=archive)
    assert len(rendered.objects) == len(helm.template().objects)
