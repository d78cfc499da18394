"""The training report: how good a trained model is, on one page a person can open beside its files.

`write_report` renders four panels from the held-out predictions into report.png, and report.html,
a page that needs nothing else: the same PNG embedded, the metrics, the gates and whether each
passed, and what the model's features contribute.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.calibration import ECE_BINS, expected_calibration_error, reliability_curve

if TYPE_CHECKING:
    from matplotlib.axes import Axes

REPORT_PNG = "report.png"
REPORT_HTML = "report.html"
CONTRIBUTION_KINDS = ("coefficient", "permutation importance")

# 11 x 8.5 in at 100 dpi: a landscape page, readable on a screen, a PNG of about 100 KB.
FIGURE_SIZE_IN = (11.0, 8.5)
FIGURE_DPI = 100
HISTOGRAM_BINS = 40
# More bars than this do not fit a quarter of the page legibly; the HTML table lists them all.
MAX_BARS = 20

MODEL_COLOUR = "#3b7dd8"
ORACLE_COLOUR = "#e8743b"
NEGATIVE_COLOUR = "#3b7dd8"
POSITIVE_COLOUR = "#e8743b"
REFERENCE_COLOUR = "#888888"


# eq=False: the fields include arrays, whose == is elementwise and has no single truth value.
@dataclass(frozen=True, eq=False)
class Evaluation:
    """A trained model's held-out predictions and what training concluded from them."""

    version: str
    estimator: str
    labels: np.ndarray  # 0/1, one per held-out row
    probabilities: np.ndarray  # the model's, same rows
    oracle_probabilities: np.ndarray  # the true probabilities the labels were drawn from, same rows
    contributions: list[tuple[str, float]]  # feature name -> coefficient or importance
    contributions_kind: str  # one of CONTRIBUTION_KINDS
    metrics: dict[str, float]
    gates: dict[str, tuple[float, float, bool]]  # name -> (value, limit, passed)

    def __post_init__(self) -> None:
        rows = len(self.labels)
        if len(self.probabilities) != rows or len(self.oracle_probabilities) != rows:
            raise ValueError(
                f"labels, probabilities and oracle_probabilities must describe the same rows, got"
                f" {rows}, {len(self.probabilities)} and {len(self.oracle_probabilities)}"
            )
        if set(np.unique(self.labels).tolist()) != {0, 1}:
            raise ValueError("labels must hold both classes, 0 and 1, for an ROC curve; evaluate on a larger held-out set")
        if self.contributions_kind not in CONTRIBUTION_KINDS:
            raise ValueError(f"contributions_kind must be one of {CONTRIBUTION_KINDS}, got {self.contributions_kind!r}")

    @property
    def failed_gates(self) -> list[str]:
        return [name for name, (_value, _limit, passed) in self.gates.items() if not passed]


def write_report(directory: Path, evaluation: Evaluation) -> tuple[Path, Path]:
    """Write report.png and report.html into `directory` (created if missing); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    png = render_png(evaluation)
    png_path, html_path = directory / REPORT_PNG, directory / REPORT_HTML
    _write_atomically(png_path, png)
    _write_atomically(html_path, render_html(evaluation, png).encode("utf-8"))
    return png_path, html_path


def render_png(evaluation: Evaluation) -> bytes:
    """The four panels: ROC, reliability, scores per class, contributions."""
    # Imported here: matplotlib takes about a second to import, and only training draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure on its own Agg canvas, not pyplot: no display needed, no global figure to close.
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(_plain(f"Model {evaluation.version} ({evaluation.estimator})"), fontsize=13)
    (roc, reliability), (scores, contributions) = figure.subplots(2, 2)
    _draw_roc(roc, evaluation)
    _draw_reliability(reliability, evaluation)
    _draw_scores(scores, evaluation)
    _draw_contributions(contributions, evaluation)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


def _draw_roc(axes: Axes, evaluation: Evaluation) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    # The oracle dashed and on top: a good model's curve lies almost on it, and both stay visible.
    for name, probabilities, colour, style in (
        ("model", evaluation.probabilities, MODEL_COLOUR, "-"),
        ("oracle (true probabilities)", evaluation.oracle_probabilities, ORACLE_COLOUR, "--"),
    ):
        false_positive, true_positive, _ = roc_curve(evaluation.labels, probabilities)
        auc = roc_auc_score(evaluation.labels, probabilities)
        axes.plot(false_positive, true_positive, color=colour, linestyle=style, label=f"{name}: AUC {auc:.4f}")
    axes.plot([0, 1], [0, 1], linestyle=":", color=REFERENCE_COLOUR, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (held out)")
    axes.legend(loc="lower right")


def _draw_reliability(axes: Axes, evaluation: Evaluation) -> None:
    axes.plot([0, 1], [0, 1], linestyle="--", color=REFERENCE_COLOUR, label="perfectly calibrated")
    # The oracle's own gap is what sampling noise alone gives on this many rows.
    oracle = reliability_curve(evaluation.labels, evaluation.oracle_probabilities)
    oracle_ece = expected_calibration_error(evaluation.labels, evaluation.oracle_probabilities)
    axes.plot(oracle.mean_predicted, oracle.observed_rate, marker=".", color=ORACLE_COLOUR, alpha=0.6,
              label=f"oracle: ECE {oracle_ece:.4f}")
    model = reliability_curve(evaluation.labels, evaluation.probabilities)
    ece = expected_calibration_error(evaluation.labels, evaluation.probabilities)
    axes.plot(model.mean_predicted, model.observed_rate, marker="o", color=MODEL_COLOUR, label=f"model: ECE {ece:.4f}")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (per bin)", ylabel="observed purchase rate",
             title=f"Reliability, {ECE_BINS} bins: ECE {ece:.4f}")
    axes.legend(loc="upper left")


def _draw_scores(axes: Axes, evaluation: Evaluation) -> None:
    edges = np.histogram_bin_edges(evaluation.probabilities, bins=HISTOGRAM_BINS).tolist()
    for label, colour in ((0, NEGATIVE_COLOUR), (1, POSITIVE_COLOUR)):
        scores = evaluation.probabilities[evaluation.labels == label]
        axes.hist(scores, bins=edges, density=True, histtype="stepfilled", alpha=0.45, color=colour,
                  edgecolor=colour, label=f"label {label} ({len(scores):,} rows)")
    axes.set(xlabel="model's predicted probability", ylabel="density", title="Predicted probability by true label")
    axes.legend(loc="upper right")


def _draw_contributions(axes: Axes, evaluation: Evaluation) -> None:
    ranked = sorted(evaluation.contributions, key=lambda item: abs(item[1]), reverse=True)
    shown = ranked[:MAX_BARS]
    kind = evaluation.contributions_kind
    if not shown:
        axes.text(0.5, 0.5, f"no {kind} recorded", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    names = [_plain(name) for name, _ in reversed(shown)]  # barh draws the first bar at the bottom
    values = [value for _, value in reversed(shown)]
    axes.barh(names, values, color=[POSITIVE_COLOUR if value >= 0 else NEGATIVE_COLOUR for value in values])
    axes.axvline(0, color=REFERENCE_COLOUR, linewidth=0.8)
    axes.tick_params(axis="y", labelsize=7 if len(shown) > 12 else 9)
    subset = f"largest {len(shown)} of {len(ranked)}" if len(shown) < len(ranked) else f"all {len(ranked)}"
    axes.set(xlabel=kind, title=f"{kind.capitalize()} per feature ({subset}, by |value|)")


def _plain(text: str) -> str:
    """Text for matplotlib with any `$` shown as itself rather than starting mathematical notation."""
    return text.replace("$", r"\$")


def render_html(evaluation: Evaluation, png: bytes) -> str:
    """One page that needs no other file: the PNG travels inside it as a data URI."""
    e = html.escape
    failed = evaluation.failed_gates
    if not evaluation.gates:
        verdict = "No gates were checked."
    elif failed:
        verdict = f"{len(failed)} of {len(evaluation.gates)} gates failed: {', '.join(failed)}."
    else:
        verdict = f"All {len(evaluation.gates)} gates passed."
    metric_rows = "\n".join(
        f'<tr><th scope="row">{e(name)}</th><td>{e(_number(value))}</td></tr>' for name, value in evaluation.metrics.items()
    )
    gate_rows = "\n".join(
        f'<tr class="{"passed" if passed else "failed"}"><th scope="row">{e(name)}</th><td>{e(_number(value))}</td>'
        f'<td>{e(_number(limit))}</td><td>{"passed" if passed else "failed"}</td></tr>'
        for name, (value, limit, passed) in evaluation.gates.items()
    )
    contribution_rows = "\n".join(
        f'<tr><th scope="row">{e(name)}</th><td>{e(_number(value))}</td></tr>'
        for name, value in sorted(evaluation.contributions, key=lambda item: abs(item[1]), reverse=True)
    )
    image = base64.b64encode(png).decode("ascii")
    title = f"Model {evaluation.version}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1120px; padding: 0 1em; color: #222; }}
img {{ width: 100%; height: auto; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }}
thead th {{ border-bottom: 2px solid #ccc; }}
tr.failed {{ background: #fde2e1; }}
tr.failed td:last-child {{ color: #b00020; font-weight: bold; }}
tr.passed td:last-child {{ color: #1b7a1b; }}
.verdict {{ font-weight: bold; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>Estimator: <code>{e(evaluation.estimator)}</code>. Held-out rows: {len(evaluation.labels):,}.</p>
<p class="verdict">{e(verdict)}</p>
<img src="data:image/png;base64,{image}" alt="{e(f"ROC curve, reliability curve, score histograms and feature contributions of {title}")}">
<h2>Gates</h2>
<table>
<thead><tr><th>Gate</th><th>Value</th><th>Limit</th><th>Result</th></tr></thead>
<tbody>
{gate_rows}
</tbody>
</table>
<h2>Metrics</h2>
<table>
<thead><tr><th>Metric</th><th>Value</th></tr></thead>
<tbody>
{metric_rows}
</tbody>
</table>
<h2>Contributions ({e(evaluation.contributions_kind)}, by |value|)</h2>
<table>
<thead><tr><th>Feature</th><th>{e(evaluation.contributions_kind.capitalize())}</th></tr></thead>
<tbody>
{contribution_rows}
</tbody>
</table>
</body>
</html>
"""


def _number(value: float) -> str:
    """Counts as integers, rates and scores to four decimals, tiny values in scientific notation."""
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one: write beside it, then rename over it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
