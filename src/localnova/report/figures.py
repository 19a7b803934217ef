"""The report's figures, each returned as an inline SVG string.

Figures take plain numbers (already summarised), so they hold no statistics of their own.
matplotlib is imported inside each call and drawn through the Agg canvas without pyplot, so
importing this module is free and no global backend or figure state is touched. Text stays
text in the SVG (svg.fonttype 'none'): smaller files, and matplotlib escapes it for XML.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from itertools import count
from typing import Any

import numpy as np

ARM_COLOURS = {"base": "#7f7f7f", "rag": "#1f77b4", "ft": "#ff7f0e", "ft_rag": "#2ca02c", "raft": "#9467bd"}
EXTRA_COLOURS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
_figure_numbers = count()


def _label(text: Any) -> str:
    """Plain text for matplotlib: a '$' would otherwise start mathtext (and may fail to parse)."""
    return str(text).replace("$", r"\$")


def _colour(arm: str, arms: Sequence[str]) -> str:
    if arm in ARM_COLOURS:
        return ARM_COLOURS[arm]
    extras = [a for a in arms if a not in ARM_COLOURS]
    return EXTRA_COLOURS[extras.index(arm) % len(EXTRA_COLOURS)] if arm in extras else "#333333"


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _to_svg(figure) -> str:
    """The figure as an <svg> element ready to inline in HTML (no XML prolog or doctype)."""
    import matplotlib

    buffer = io.StringIO()
    # A distinct salt per figure keeps the generated element ids (clip paths, markers)
    # distinct when several SVGs share one HTML document.
    salt = f"localnova-figure-{next(_figure_numbers)}"
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :].strip()


def _grouped_positions(n_groups: int, n_series: int) -> tuple[list[float], float]:
    width = 0.8 / max(n_series, 1)
    return [index - 0.4 + width / 2 for index in range(n_groups)], width


def _finish_axes(axes, groups: Sequence[str], title: str, ylabel: str, legend: bool = True) -> None:
    axes.set_xticks(
        range(len(groups)), [_label(g) for g in groups], rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center"
    )
    axes.set_title(_label(title))
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    if legend and axes.get_legend_handles_labels()[0]:
        # Outside the axes, so it never hides a bar or a tick.
        axes.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def quality_figure(groups: Sequence[str], arms: Sequence[str], cells: Mapping[tuple[str, str], tuple[float, float, float]]) -> str:
    """Panel score (0-10) per group (run/model) and arm: bars at the mean, whiskers at the
    95% interval. `cells[(group, arm)] = (mean, low, high)`; missing cells are left blank."""
    figure = _new_figure(max(5.0, 1.3 * len(groups) * max(1, len(arms)) ** 0.5 + 2), 3.6)
    axes = figure.add_subplot()
    starts, width = _grouped_positions(len(groups), len(arms))
    for offset, arm in enumerate(arms):
        xs, means, lower, upper = [], [], [], []
        for index, group in enumerate(groups):
            mean, low, high = cells.get((group, arm), (math.nan, math.nan, math.nan))
            if not math.isfinite(mean):
                continue
            xs.append(starts[index] + offset * width)
            means.append(mean)
            lower.append(mean - low if math.isfinite(low) else 0.0)
            upper.append(high - mean if math.isfinite(high) else 0.0)
        axes.bar(xs, means, width, yerr=[lower, upper], capsize=3, label=_label(arm), color=_colour(arm, arms))
    axes.set_ylim(0, 10.5)
    _finish_axes(axes, groups, "Quality: panel score by arm (95% bootstrap interval)", "panel score (0-10)")
    return _to_svg(figure)


def latency_figure(groups: Sequence[str], arms: Sequence[str], cells: Mapping[tuple[str, str], tuple[float, float]]) -> str:
    """Latency per group and arm: bars at the median, a black tick at the p90.
    `cells[(group, arm)] = (median_ms, p90_ms)`."""
    figure = _new_figure(max(5.0, 1.3 * len(groups) * max(1, len(arms)) ** 0.5 + 2), 3.6)
    axes = figure.add_subplot()
    starts, width = _grouped_positions(len(groups), len(arms))
    p90_labelled = False
    for offset, arm in enumerate(arms):
        points = [(starts[i] + offset * width, *cells[(g, arm)]) for i, g in enumerate(groups) if (g, arm) in cells]
        if not points:
            continue
        xs, medians, p90s = zip(*points, strict=True)
        axes.bar(xs, medians, width, label=_label(arm), color=_colour(arm, arms))
        axes.scatter(xs, p90s, marker="_", s=300, color="black", label=None if p90_labelled else "p90", zorder=3)
        p90_labelled = True
    axes.set_ylim(bottom=0)
    _finish_axes(axes, groups, "Latency by arm (bar: median, tick: p90)", "latency (ms)")
    return _to_svg(figure)


def tokens_figure(groups: Sequence[str], arms: Sequence[str], cells: Mapping[tuple[str, str], tuple[float, float]]) -> str:
    """Mean tokens per answer, input and output stacked. `cells[(group, arm)] = (input, output)`."""
    figure = _new_figure(max(5.0, 1.3 * len(groups) * max(1, len(arms)) ** 0.5 + 2), 3.6)
    axes = figure.add_subplot()
    starts, width = _grouped_positions(len(groups), len(arms))
    for offset, arm in enumerate(arms):
        points = [(starts[i] + offset * width, *cells[(g, arm)]) for i, g in enumerate(groups) if (g, arm) in cells]
        if not points:
            continue
        xs, inputs, outputs = zip(*points, strict=True)
        colour = _colour(arm, arms)
        axes.bar(xs, inputs, width, color=colour, label=_label(f"{arm} input"))
        axes.bar(xs, outputs, width, bottom=inputs, color=colour, alpha=0.45, hatch="//", label=_label(f"{arm} output"))
    axes.set_ylim(bottom=0)
    _finish_axes(axes, groups, "Tokens per answer by arm (solid: input, hatched: output)", "mean tokens")
    return _to_svg(figure)


def _heatmap(
    axes,
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    vmin: float,
    vmax: float,
    cmap: str,
    annotate: bool,
    digits: int,
):
    values = np.array(matrix, dtype=float)
    masked = np.ma.masked_invalid(values)
    image = axes.imshow(masked, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    axes.set_xticks(range(len(column_labels)), [_label(c) for c in column_labels], rotation=30, ha="right", fontsize="small")
    axes.set_yticks(range(len(row_labels)), [_label(r) for r in row_labels], fontsize="small")
    if annotate:
        for (row, column), value in np.ndenumerate(values):
            text = "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
            red, green, blue, _ = image.cmap(image.norm(value)) if math.isfinite(value) else (1, 1, 1, 1)
            # Light text on dark cells, dark text on light ones.
            colour = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
            axes.text(column, row, text, ha="center", va="center", fontsize="x-small", color=colour)
    return image


def agreement_figure(panels: Sequence[tuple[str, Sequence[str], Sequence[Sequence[float]]]]) -> str:
    """Pairwise Spearman correlation between judges on per-answer scores, one heatmap per run.
    `panels = [(title, judges, matrix)]`; NaN cells (undefined correlation) read 'n/a'."""
    figure = _new_figure(max(4.2, 3.8 * len(panels)), 3.6)
    image = None
    for index, (title, judges, matrix) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        image = _heatmap(axes, matrix, judges, judges, -1.0, 1.0, "RdBu", annotate=True, digits=2)
        axes.set_title(_label(f"Judge agreement (Spearman)\n{title}"), fontsize="small")
    if image is not None:
        figure.colorbar(image, ax=figure.axes, shrink=0.8)
    return _to_svg(figure)


def per_question_figure(question_ids: Sequence[str], columns: Sequence[str], matrix: Sequence[Sequence[float]]) -> str:
    """Panel score per question (rows) and run/model/arm (columns); blank where not scored."""
    annotate = len(question_ids) * len(columns) <= 150  # numbers in every cell get unreadable (and slow) beyond this
    figure = _new_figure(max(5.0, 0.9 * len(columns) + 2.5), max(3.0, 0.28 * len(question_ids) + 1.8))
    axes = figure.add_subplot()
    image = _heatmap(axes, matrix, question_ids, columns, 0.0, 10.0, "viridis", annotate=annotate, digits=1)
    axes.set_title("Panel score per question")
    figure.colorbar(image, ax=axes, shrink=0.8, label="panel score (0-10)")
    return _to_svg(figure)


CONTROL_LABELS = ("real answers", "ground truth", "empty answer", "other question's truth")


def controls_figure(judges: Sequence[str], means: Mapping[tuple[str, str], float]) -> str:
    """Mean score per judge on real answers and on each control.
    `means[(judge, label)]` with label from CONTROL_LABELS; missing pairs are left blank."""
    colours = ("#7f7f7f", "#2ca02c", "#d62728", "#9467bd")
    figure = _new_figure(max(5.0, 1.6 * len(judges) + 2), 3.6)
    axes = figure.add_subplot()
    starts, width = _grouped_positions(len(judges), len(CONTROL_LABELS))
    for offset, (label, colour) in enumerate(zip(CONTROL_LABELS, colours, strict=True)):
        points = [
            (starts[i] + offset * width, means[(j, label)]) for i, j in enumerate(judges) if math.isfinite(means.get((j, label), math.nan))
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.bar(xs, ys, width, color=colour, label=label)
    axes.set_ylim(0, 10.5)
    _finish_axes(axes, judges, "Judge controls: mean score per judge", "mean score (0-10)")
    return _to_svg(figure)


def loss_figure(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Training loss against step, one line per fine-tuned model. `curves[label] = [{step, loss}]`."""
    figure = _new_figure(6.0, 3.6)
    axes = figure.add_subplot()
    for label, points in curves.items():
        usable = [(p["step"], p["loss"]) for p in points if p.get("step") is not None and p.get("loss") is not None]
        if usable:
            steps, losses = zip(*usable, strict=True)
            axes.plot(steps, losses, marker="." if len(usable) < 50 else None, label=_label(label))
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title("Fine-tuning loss")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", frameon=False)
    return _to_svg(figure)
