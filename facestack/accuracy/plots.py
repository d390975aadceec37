"""ROC and DET curves as one PNG (matplotlib, Agg backend; optional: without it the plot is skipped)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facestack.accuracy import metrics


def _thin(far: np.ndarray, tar: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most `points` ROC points, evenly spread in log FAR (a 1.2-million-impostor ROC has that many)."""
    if len(far) <= points:
        return far, tar
    grid = np.unique(np.r_[np.geomspace(max(far[far > 0].min(), 1e-9), 1, points), 1.0])
    idx = np.minimum(np.searchsorted(far, grid, side="right") - 1, len(far) - 1)
    return far[idx], tar[idx]


def roc_det_png(path: Path, curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str) -> bool:
    """`curves[panel][label] = (scores, labels)`; the first panel is drawn as ROC (TAR vs FAR, log FAR), the
    second as DET (FNMR vs FMR, log-log). Returns False when matplotlib is not installed."""
    # matplotlib 3.9's mathtext calls pyparsing 3.3's deprecated camelCase names: not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pyparsing|matplotlib)(\.|$)")
        return _draw(path, curves, title)


def _draw(path: Path, curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = list(curves.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels, strict=True):
        det = panel.lower().startswith("det")
        for label, (scores, labels) in series.items():
            far, tar, _ = metrics.roc_curve(scores, labels)
            far, tar = _thin(far, tar)
            keep = (far > 0) & (tar < 1) if det else far > 0  # log axes: no zero rates
            if det:
                ax.loglog(far[keep], 1 - tar[keep], label=label, lw=1.4)
            else:
                ax.semilogx(far[keep], tar[keep], label=label, lw=1.4)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("false match rate (FMR / FAR)")
        ax.set_ylabel("false non-match rate (FNMR)" if det else "true accept rate (TAR)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right" if det else "lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
