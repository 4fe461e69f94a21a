#!/usr/bin/env python3
"""Figure 10 of Choi et al. (2015) for several models side by side, from ``beam_jobs.correlation`` outputs.

``python scripts/figure10_compare.py LABEL=CORRELATION_DIR [LABEL=CORRELATION_DIR ...] --output FIGURE.png
[--markdown]``

Each ``CORRELATION_DIR`` is the ``--output`` folder of a ``python -m beam_jobs.correlation`` run (its
``correlations.csv`` and ``summary.json`` are read). The figure has one panel per model, drawn like
the job's ``figure10.png`` (mean ± 1 std per layer, one line per attribute; the layer names of the
export under the level numbers) on a shared y axis, so the curves can be compared across models.
``--markdown`` also prints the per-layer table (mean ± std) as Markdown. Used for
``docs/figures/figure10_mtt_vgg_vs_demo.png`` in ``docs/correlation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from tfaural.correlation import ATTRIBUTES, TableRow, read_table_csv
from tfaural.errors import ParameterError, TfauralError


def _load(spec: str) -> tuple[str, tuple[TableRow, ...], dict]:
    label, sep, folder = spec.partition("=")
    if not sep or not label or not folder:
        raise ParameterError(f"{spec!r} is invalid: expected LABEL=CORRELATION_DIR")
    path = os.path.join(folder, "correlations.csv")
    if not os.path.isfile(path):
        raise ParameterError(f"{folder!r} holds no correlations.csv: expected a beam_jobs.correlation --output folder")
    with open(path, encoding="utf-8") as handle:
        table = read_table_csv(handle.read())
    summary: dict = {}
    summary_path = os.path.join(folder, "summary.json")
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
    return label, table, summary


def _layer_names(summary: dict) -> dict[int, str]:
    names = (summary.get("model") or {}).get("layer_names") or {}
    return {int(level): str(name) for level, name in names.items()}


def draw(models: Sequence[tuple[str, tuple[TableRow, ...], dict]], output: str) -> str:
    """Writes the side-by-side figure (PNG) to ``output``; returns the path."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(models), 4.4), dpi=120, layout="constrained")
    axes_list = figure.subplots(1, len(models), sharey=True, squeeze=False)[0]
    markers = {"key": "o", "chord": "s", "instrument": "^"}
    for axes, (label, table, summary) in zip(axes_list, models):
        names = _layer_names(summary)
        layers = sorted({row.layer for row in table})
        for index, attribute in enumerate(ATTRIBUTES):
            rows = sorted((r for r in table if r.attribute == attribute and r.mean is not None), key=lambda r: r.layer)
            offset = (index - 1) * 0.08
            axes.errorbar([r.layer + offset for r in rows], [float(r.mean or 0.0) for r in rows],
                          yerr=[r.std or 0.0 for r in rows], marker=markers[attribute], capsize=3, linewidth=1.5,
                          label=attribute)
        axes.set_xticks(layers, [f"{layer}\n{names[layer]}" if layer in names else str(layer) for layer in layers])
        grid = summary.get("grid") or {}
        detail = f"{grid.get('n_signals', '?')} signals at {grid.get('sample_rate', '?')} Hz" if grid else ""
        axes.set_title(f"{label}\n{detail}", fontsize=9)
        axes.set_xlabel("layer")
        axes.grid(True, alpha=0.3)
    axes_list[0].set_ylabel("avg. correlation of every pair")
    handles, labels = axes_list[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, title="variation of")
    figure.savefig(output, format="png")
    return output


def markdown(models: Sequence[tuple[str, tuple[TableRow, ...], dict]]) -> str:
    """The per-layer table: one row per layer, one column per (model, attribute), ``mean ± std``."""
    header = ["layer"] + [f"{label} {attribute}" for label, _, _ in models for attribute in ATTRIBUTES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    layers = sorted({row.layer for _, table, _ in models for row in table})
    for layer in layers:
        cells = [str(layer)]
        for _, table, _ in models:
            for attribute in ATTRIBUTES:
                row = next((r for r in table if r.layer == layer and r.attribute == attribute), None)
                cells.append("n/a" if row is None or row.mean is None else f"{row.mean:.2f} ± {row.std or 0.0:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/figure10_compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="LABEL=CORRELATION_DIR")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    try:
        models = [_load(spec) for spec in args.models]
        print(draw(models, args.output))
        if args.markdown:
            print(markdown(models))
    except TfauralError as err:
        print(f"figure10_compare: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
