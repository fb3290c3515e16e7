"""``chart.png``: error rate per test set, one bar per model, with the bootstrap intervals.

A compared model's error bar is the reference's rate plus the 95 % paired-bootstrap interval of the
difference: where it does not reach the reference bar's height, the change is significant.
"""

from __future__ import annotations

import os
from pathlib import Path

from whisper_ft.workflows.compare.runner import CompareReport


def write_chart(report: CompareReport, path: str | Path) -> Path:
    """Grouped bars (sets x models) with interval error bars; written aside and renamed."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    path = Path(path)
    sets = [t.name for t in report.sets]
    n_models = len(report.models)
    width = 0.8 / n_models
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(sets) * n_models / 2 + 2), 4.2))
    try:
        for mi, m in enumerate(report.models):
            xs, heights, lows, highs = [], [], [], []
            for si, name in enumerate(sets):
                r = report.result(name, mi)
                rate = 100 * r.report.score.error_rate
                xs.append(si - 0.4 + width * (mi + 0.5))
                heights.append(rate)
                d = r.vs_reference
                if d is None:
                    lows.append(0.0)
                    highs.append(0.0)
                else:
                    base = 100 * report.result(name, 0).report.score.error_rate
                    lows.append(max(0.0, rate - (base + 100 * d.low)))
                    highs.append(max(0.0, base + 100 * d.high - rate))
            has_bars = mi > 0
            ax.bar(xs, heights, width * 0.95, label=m.shown,
                   yerr=[lows, highs] if has_bars else None, capsize=4 if has_bars else 0)
            for x, h, up in zip(xs, heights, highs):  # the value above the bar and its interval
                ax.annotate(f"{h:.1f}", (x, h + up), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
        metrics = [report.result(name, 0).report.score.metric.upper() for name in sets]
        ax.set_xticks(range(len(sets)), [f"{n}\n({m})" for n, m in zip(sets, metrics)])
        ax.set_ylabel("error rate (%)")
        ax.set_title(f"vs {report.models[0].label}: 95% paired-bootstrap intervals", fontsize=10)
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path
