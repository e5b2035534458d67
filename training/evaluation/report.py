"""``python -m training evaluate ... --report DIR``: one HTML page that opens offline.

``DIR/index.html`` holds, per model: the scores table with 95% intervals, the MUC table,
per-label F1 bars with interval whiskers, the type confusion heatmap, the learning curves of
the training run (from the model directory's ``training_log.json``, the Trainer's log
history) and a browser of every classified error. Several models get a comparison table with
paired bootstrap tests first. Plots are PNGs drawn with matplotlib (no display needed) and
embedded as base64, so the page is one file; every piece of document text is HTML-escaped.
Beside it: ``scores.json`` (the ``--json`` payload) and ``errors.jsonl`` (one error a line,
with its model).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from training.errors import DataError
from training.evaluation.error_analysis import ERROR_KINDS, write_jsonl
from training.evaluation.scores import MUC_MODES, format_interval, write_json
from training.files import write_atomically


@dataclass
class ReportModel:
    """One evaluated model as the report shows it."""

    name: str
    scores: dict
    errors: list[dict]
    training_log: list[dict] | None = None


def read_training_log(model_dir: str | Path) -> list[dict] | None:
    """The Trainer's log history saved beside a model (``training_log.json``); None when absent."""
    path = Path(model_dir) / "training_log.json"
    if not path.is_file():
        return None
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); retrain or delete it"
        ) from None
    if not isinstance(log, list) or not all(isinstance(entry, dict) for entry in log):
        raise DataError(f"{path}: expected a list of log entries (the Trainer's log_history)")
    return log


# --- plots ---------------------------------------------------------------------------------


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def f1_bars_png(scores: dict) -> str:
    """Per-label strict F1 as horizontal bars with 95% interval whiskers (base64 PNG)."""
    from matplotlib.figure import Figure

    per_label = scores["strict"]["per_label"]
    names = sorted(per_label, key=lambda label: per_label[label]["f1"])
    rows = [(name, per_label[name]) for name in names]
    rows += [("micro", scores["strict"]["micro"]), ("macro", scores["strict"]["macro"])]
    f1 = [leaf["f1"] for _, leaf in rows]
    low = [leaf["f1"] - leaf["ci_low"] if leaf.get("ci_low") is not None else 0.0 for _, leaf in rows]
    high = [leaf["ci_high"] - leaf["f1"] if leaf.get("ci_high") is not None else 0.0 for _, leaf in rows]
    figure = Figure(figsize=(6.5, 0.32 * len(rows) + 1.0))
    axes = figure.subplots()
    colours = ["#4363d8"] * len(names) + ["#333333", "#777777"]
    positions = list(range(len(rows)))
    bars = axes.barh(positions, f1, xerr=[low, high], color=colours, capsize=3, error_kw={"elinewidth": 1})
    # Values written at the bars: a short run's zeros still read as zeros, not as an empty plot.
    axes.bar_label(bars, labels=[f"{value:.2f}" for value in f1], padding=3, fontsize=8)
    axes.set_yticks(positions, [name for name, _ in rows])
    axes.set_xlim(0, 1.08)
    axes.set_xlabel("strict F1 (whiskers: 95% bootstrap interval)")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def confusion_png(confusion: dict[str, dict[str, int]]) -> str | None:
    """Heatmap of gold label (rows) against predicted label over boundary-matched spans, coloured
    by the share of the row and annotated with counts (base64 PNG); None without matched spans."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    if not labels:
        return None
    counts = [[confusion.get(g, {}).get(p, 0) for p in labels] for g in labels]
    shares = [[n / max(1, sum(row)) for n in row] for row in counts]
    size = 0.45 * len(labels) + 2.0
    figure = Figure(figsize=(size + 1.0, size))
    axes = figure.subplots()
    # A power norm keeps the rare confusions visible next to the dominant diagonal.
    image = axes.imshow(shares, cmap="Blues", norm=PowerNorm(gamma=0.4, vmin=0, vmax=1))
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            if n:
                axes.text(
                    j,
                    i,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i][j] > 0.3 else "black",
                )
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("gold label")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the gold label's matched spans")
    return _png(figure)


def learning_curve_series(log: Sequence[dict]) -> dict[str, list[tuple[float, float]]]:
    """The points the learning-curve plot draws, by series.

    Short runs log no per-step training loss (fewer steps than ``logging_steps``): the run's
    mean training loss (``train_loss``) then stands in, at the last epoch.
    """
    train = [(e["epoch"], e["loss"]) for e in log if "loss" in e and "epoch" in e]
    if not train:
        train = [(e["epoch"], e["train_loss"]) for e in log if "train_loss" in e and "epoch" in e]
    return {
        "training loss": train,
        "validation loss": [(e["epoch"], e["eval_loss"]) for e in log if "eval_loss" in e and "epoch" in e],
        "validation F1": [(e["epoch"], e["eval_f1"]) for e in log if "eval_f1" in e and "epoch" in e],
    }


def learning_curves_png(log: Sequence[dict]) -> str | None:
    """Training and validation loss, and validation F1, by epoch (base64 PNG); None without entries.

    Reads well for one-epoch runs too: single points are drawn as markers, the F1 axis leaves
    room below 0 and above 1, and the "best" label sits inside the plot.
    """
    from matplotlib.figure import Figure

    series = learning_curve_series(log)
    if not any(series.values()):
        return None
    epochs = [x for points in series.values() for x, _ in points]
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    loss_axes, f1_axes = figure.subplots(1, 2)
    for name, style in (("training loss", "-"), ("validation loss", "o-")):
        points = series[name]
        if points:
            marker = style if len(points) > 1 else "o"
            loss_axes.plot(*zip(*points), marker, label=name, markersize=4)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    f1 = series["validation F1"]
    if f1:
        f1_axes.plot(*zip(*f1), "o-", color="#3cb44b", markersize=5)
        best = max(f1, key=lambda point: point[1])
        below = best[1] > 0.5  # the label goes where the plot has room
        f1_axes.annotate(
            f"best {best[1]:.3f}",
            best,
            textcoords="offset points",
            xytext=(0, -16 if below else 10),
            ha="center",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    else:
        f1_axes.text(0.5, 0.5, "no validation F1 logged", ha="center", transform=f1_axes.transAxes)
    for axes in (loss_axes, f1_axes):
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    f1_axes.set_xlabel("epoch")
    f1_axes.set_ylabel("validation entity F1 (strict)")
    f1_axes.set_ylim(-0.05, 1.05)
    f1_axes.grid(alpha=0.3)
    return _png(figure)


# --- HTML ----------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.total td { font-weight: bold; background: #f4f4f4; }
td.text { max-width: 45em; }
table.errors th, table.errors td { text-align: left; }
mark.gold { background: #cde6ff; } mark.pred { background: #ffe0b2; }
mark.gold.pred { background: #dccff5; }
.filters { margin: 0.5em 0; } .filters > * { margin-right: 0.8em; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.muted { color: #777; }
"""

# Filters the error table in place; without JavaScript every row simply stays visible.
SCRIPT = """
function filterErrors(section) {
  const root = document.getElementById(section);
  const kind = root.querySelector('select.kind').value;
  const label = root.querySelector('select.label').value;
  const text = root.querySelector('input.search').value.toLowerCase();
  let shown = 0;
  for (const row of root.querySelectorAll('tbody tr')) {
    const visible = (!kind || row.dataset.kind === kind)
      && (!label || row.dataset.labels.split(' ').includes(label))
      && (!text || row.textContent.toLowerCase().includes(text));
    row.style.display = visible ? '' : 'none';
    if (visible) shown += 1;
  }
  root.querySelector('.shown').textContent = shown;
}
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ci(leaf: dict) -> str:
    return format_interval(leaf, dash="&ndash;") or "-"


def _image(png: str | None, alt: str, missing: str) -> str:
    if png is None:
        return f'<p class="muted">{_e(missing)}</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def scores_table(scores: dict) -> str:
    """Per label, micro and macro: strict P/R/F1 with interval, default F1, span F1, support."""
    strict, default = scores["strict"], scores["default"]
    spans = scores.get("spans", {"per_label": {}, "micro": {}, "macro": {}})
    labels = sorted(set(strict["per_label"]) | set(default["per_label"]) | set(spans["per_label"]))
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    head = (
        "<tr><th>label</th><th>P (strict)</th><th>R (strict)</th><th>F1 (strict)</th><th>95% CI</th>"
        "<th>F1 (default)</th><th>95% CI</th><th>F1 (exact spans)</th><th>95% CI</th><th>support</th></tr>"
    )

    def row(name: str, s: dict, d: dict, x: dict, css: str = "") -> str:
        return (
            f'<tr class="{css}"><td>{_e(name)}</td><td>{_f(s["precision"])}</td><td>{_f(s["recall"])}</td>'
            f"<td>{_f(s['f1'])}</td><td>{_ci(s)}</td><td>{_f(d['f1'])}</td><td>{_ci(d)}</td>"
            f"<td>{_f(x.get('f1'))}</td><td>{_ci(x)}</td><td>{s['support']}</td></tr>"
        )

    rows = [
        row(
            label,
            strict["per_label"].get(label, empty),
            default["per_label"].get(label, empty),
            spans["per_label"].get(label, empty),
        )
        for label in labels
    ]
    rows += [row(k, strict[k], default[k], spans[k], "total") for k in ("micro", "macro")]
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def muc_table(scores: dict) -> str:
    """MUC-style scores (nervaluate's definitions), overall per mode."""
    head = (
        "<tr><th>mode</th><th>correct</th><th>incorrect</th><th>partial</th><th>missed</th>"
        "<th>spurious</th><th>P</th><th>R</th><th>F1</th><th>95% CI</th></tr>"
    )
    rows = []
    for mode in MUC_MODES:
        o = scores["muc"][mode]["overall"]
        rows.append(
            f"<tr><td>{mode}</td><td>{o['correct']}</td><td>{o['incorrect']}</td><td>{o['partial']}</td>"
            f"<td>{o['missed']}</td><td>{o['spurious']}</td><td>{_f(o['precision'])}</td>"
            f"<td>{_f(o['recall'])}</td><td>{_f(o['f1'])}</td><td>{_ci(o)}</td></tr>"
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def highlighted_context(context: dict, marks: Sequence[tuple[dict | None, str]]) -> str:
    """``context`` (``before``, ``text``, ``after``) with spans marked, every piece escaped.

    ``marks``: ``(span, css class)`` pairs; a span is a dict with ``start`` and ``end`` in the
    document (None: nothing to mark). ``context["text"]`` starts at the first span's start.
    """
    present = [(s, css) for s, css in marks if s]
    start = min(s["start"] for s, _ in present)
    text = context["text"]
    spans = [(s["start"] - start, s["end"] - start, css) for s, css in present]
    # Mark the union character by character: gold, predicted or both (both shows as predicted
    # inside gold), so overlapping spans need no nesting rules.
    pieces, current, run = [], None, ""
    for i, char in enumerate(text):
        classes = " ".join(css for a, b, css in spans if a <= i < b)
        if classes != current:
            if run:
                pieces.append(f'<mark class="{current}">{_e(run)}</mark>' if current else _e(run))
            current, run = classes, ""
        run += char
    if run:
        pieces.append(f'<mark class="{current}">{_e(run)}</mark>' if current else _e(run))
    return f"&hellip;{_e(context['before'])}{''.join(pieces)}{_e(context['after'])}&hellip;"


def _highlighted_context(record: dict) -> str:
    """An error's text with its gold and predicted spans marked."""
    return highlighted_context(record["context"], [(record["gold"], "gold"), (record["predicted"], "pred")])


def filterable_table(
    section_id: str,
    kinds: Sequence[str],
    header: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    legend: str = "",
    noun: str = "errors",
) -> str:
    """A table filtered in place by kind, label and free text (``SCRIPT``'s ``filterErrors``).

    ``rows``: ``(kind, labels, cells)``, the cells already HTML (the last one is the text).
    """
    labels = sorted({label for _, row_labels, _ in rows for label in row_labels})
    kind_options = "".join(f'<option value="{_e(k)}">{_e(k)}</option>' for k in kinds)
    label_options = "".join(f'<option value="{_e(label)}">{_e(label)}</option>' for label in labels)
    body = "".join(
        f'<tr data-kind="{_e(kind)}" data-labels="{_e(" ".join(sorted(set(row_labels))))}">'
        + "".join(f"<td>{cell}</td>" for cell in cells[:-1])
        + f'<td class="text">{cells[-1]}</td></tr>'
        for kind, row_labels, cells in rows
    )
    on_change = f"filterErrors('{section_id}')"
    return (
        f'<div id="{section_id}"><div class="filters">'
        f'<select class="kind" onchange="{on_change}"><option value="">all kinds</option>'
        f"{kind_options}</select>"
        f'<select class="label" onchange="{on_change}"><option value="">all labels</option>'
        f"{label_options}</select>"
        f'<input class="search" placeholder="search text" oninput="{on_change}">'
        f'<span><span class="shown">{len(rows)}</span> of {len(rows)} {noun} shown</span></div>'
        f"{legend}"
        '<table class="errors"><thead><tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in header)
        + f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _label(span: dict | None) -> str:
    return _e(span["label"]) if span else "-"


def error_browser(section_id: str, errors: Sequence[dict]) -> str:
    """Every classified error in one filterable table (kind, label, free text)."""
    rows = [
        (
            r["kind"],
            [s["label"] for s in (r["gold"], r["predicted"]) if s],
            [
                _e(r["doc_id"]),
                _e(r["kind"]),
                _label(r["gold"]),
                _label(r["predicted"]),
                _highlighted_context(r),
            ],
        )
        for r in errors
    ]
    legend = (
        '<p class="muted"><mark class="gold">gold span</mark> <mark class="pred">predicted span</mark> '
        '<mark class="gold pred">both</mark></p>'
    )
    return filterable_table(
        section_id, ERROR_KINDS, ["document", "kind", "gold", "predicted", "text"], rows, legend
    )


def agreement_html(summary: dict, records: Sequence[dict]) -> str:
    """The agreement section: span F1 per label and per pair, token kappa, annotators, disagreements.

    ``summary``: ``Agreement.to_dict()``; ``records``: its disagreements.
    """
    spans, tokens, tasks = summary["span_f1"], summary["token_kappa"], summary["tasks"]
    not_counted = summary["annotations_not_counted"]
    label_rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{_f(leaf['f1'])}</td><td>{leaf['agreed']}</td><td>{leaf['spans']}</td></tr>"
        for label, leaf in spans["per_label"].items()
    )
    o = spans["overall"]
    label_rows += (
        f'<tr class="total"><td>all labels</td><td>{_f(o["f1"])}</td><td>{o["agreed"]}</td>'
        f"<td>{o['spans']}</td></tr>"
    )
    kappas = {tuple(p["annotators"]): p["kappa"] for p in tokens["pairs"]}
    pair_rows = "".join(
        f"<tr><td>{_e(p['annotators'][0])}</td><td>{_e(p['annotators'][1])}</td><td>{p['tasks']}</td>"
        f"<td>{_f(p['f1'])}</td><td>{_f(kappas.get(tuple(p['annotators'])))}</td></tr>"
        for p in spans["pairs"]
    )
    annotator_rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{entry['tasks']}</td><td>{entry['spans']}</td>"
        f'<td class="text">{_e(", ".join(f"{k} {v}" for k, v in entry["per_label"].items()))}</td></tr>'
        for name, entry in summary["annotators"].items()
    )
    rows = [
        (
            r["kind"],
            [s["label"] for s in (r["first"], r["second"]) if s],
            [
                _e(r["doc_id"]),
                _e(r["kind"]),
                f"{_e(r['annotators'][0])}: {_label(r['first'])}",
                f"{_e(r['annotators'][1])}: {_label(r['second'])}",
                highlighted_context(r["context"], [(r["first"], "gold"), (r["second"], "pred")]),
            ],
        )
        for r in records
    ]
    legend = (
        '<p class="muted"><mark class="gold">first annotator</mark> '
        '<mark class="pred">second annotator</mark> '
        '<mark class="gold pred">both</mark></p>'
    )
    measure = "Cohen's" if tokens["measure"] == "cohen" else "Fleiss'"
    return (
        "<section><h2>Inter-annotator agreement</h2>"
        f"<p>{tasks['compared']} of {tasks['read']} tasks have two or more annotators and are compared "
        f"({tasks['single_annotator']} have one, {tasks['no_annotation']} none). Not counted: "
        f"{not_counted['cancelled']} cancelled annotations, {not_counted['drafts']} drafts, "
        f"{not_counted['repeated']} earlier annotations by the same annotator; "
        f"{summary['empty_annotations']} empty annotations count (no entity found).</p>"
        f"<p><b>Exact-span F1</b> (pairwise): {_f(o['f1'])}. <b>Token {measure} kappa</b> "
        f"(BIO tags of {tokens['words']} words): {_f(tokens['kappa'])}.</p>"
        "<h3>Span F1 per label</h3><table><thead><tr><th>label</th><th>F1</th><th>agreed</th>"
        f"<th>spans (both annotators)</th></tr></thead><tbody>{label_rows}</tbody></table>"
        "<h3>Pairs of annotators</h3><table><thead><tr><th>first</th><th>second</th><th>tasks</th>"
        f"<th>span F1</th><th>token kappa (Cohen)</th></tr></thead><tbody>{pair_rows}</tbody></table>"
        "<h3>Annotators</h3><table><thead><tr><th>annotator</th><th>tasks compared</th><th>spans</th>"
        f"<th>per label</th></tr></thead><tbody>{annotator_rows}</tbody></table>"
        f"<h3>Disagreements ({len(records)})</h3>"
        + filterable_table(
            "disagreements",
            ["type", "boundary", "only_first", "only_second"],
            ["document", "kind", "first", "second", "text"],
            rows,
            legend,
            noun="disagreements",
        )
        + "</section>"
    )


def audit_html(summary: dict, findings: Sequence[dict]) -> str:
    """The audit section: how the predictions were made and the ranked likely annotation errors."""
    rows = [
        (
            f["kind"],
            [s["label"] for s in (f["gold"], f["suggested"]) if s],
            [
                str(f["rank"]),
                f"{f['score']:.3f}",
                _e(f["doc_id"]),
                _e(f["kind"]),
                _label(f["gold"]),
                _label(f["suggested"]),
                highlighted_context(f["context"], [(f["gold"], "gold"), (f["suggested"], "pred")]),
            ],
        )
        for f in findings
    ]
    counts = ", ".join(f"{_e(k)} {v}" for k, v in summary["kinds"].items())
    legend = (
        '<p class="muted"><mark class="gold">annotated span</mark> '
        '<mark class="pred">model suggestion</mark> '
        '<mark class="gold pred">both</mark></p>'
    )
    return (
        "<section><h2>Likely annotation errors</h2>"
        f"<p>{summary['documents']} documents, each predicted by a model trained without it "
        f"({summary['folds']}-fold cross-validation, {_e(summary['model'])}). {len(findings)} candidates "
        f"({counts}), most likely first: the score is 1 minus the model's mean probability for the "
        "annotation's tags, on the words the two readings tag differently "
        "(1: sure the annotation is wrong; 0.5: the annotation as likely as not).</p>"
        + filterable_table(
            "audit",
            ["missing", "extra", "wrong_type", "wrong_boundary"],
            ["rank", "score", "document", "kind", "annotated", "model", "text"],
            rows,
            legend,
            noun="candidates",
        )
        + "</section>"
    )


def page_html(title: str, body: str) -> str:
    """A whole report page around ``body`` (the shared style and table filter)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>"
        f"<body><h1>{_e(title)}</h1>{body}</body></html>\n"
    )


def write_page(
    directory: str | Path, title: str, body: str, records_name: str, records: Sequence[dict], summary: dict
) -> Path:
    """Write ``index.html``, ``records_name`` (JSONL) and ``summary.json`` into ``directory`` (atomically)."""
    directory = Path(directory)
    page = page_html(title, body)
    write_atomically(directory / "index.html", lambda target: target.write_text(page, encoding="utf-8"))
    write_jsonl(directory / records_name, records)
    write_json(directory / "summary.json", summary)
    return directory / "index.html"


def comparison_html(comparison: dict) -> str:
    """The comparison table (micro F1 with intervals) and the paired bootstrap tests."""
    head = (
        "<tr><th>model</th><th>documents</th><th>strict F1</th><th>95% CI</th><th>default F1</th>"
        "<th>95% CI</th><th>exact span F1</th><th>95% CI</th></tr>"
    )
    rows = [
        f"<tr><td>{_e(r['model'])}</td><td>{r['documents']}</td>"
        + "".join(f"<td>{_f(r[s]['f1'])}</td><td>{_ci(r[s])}</td>" for s in ("strict", "default", "spans"))
        + "</tr>"
        for r in comparison["table"]
    ]
    tests = []
    for entry in comparison["paired"]:
        for scheme in ("strict", "default", "spans"):
            t = entry[scheme]
            p = "-" if t["p_value"] is None else f"{t['p_value']:.3f}"
            low = "-" if t["ci_low"] is None else f"{t['ci_low']:+.3f}&ndash;{t['ci_high']:+.3f}"
            tests.append(
                f"<tr><td>{_e(entry['a'])} &minus; {_e(entry['b'])}</td><td>{scheme}</td>"
                f"<td>{t['difference']:+.3f}</td><td>{low}</td><td>{p}</td></tr>"
            )
    for entry in comparison["unpaired"]:
        tests.append(
            f'<tr><td>{_e(entry["a"])} &minus; {_e(entry["b"])}</td><td colspan="4">no paired test: '
            f"{_e(entry['reason'])}</td></tr>"
        )
    return (
        "<section><h2>Comparison</h2>"
        f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        "<h3>Paired bootstrap tests of the micro F1 difference</h3>"
        '<p class="muted">Both models scored on the same resampled documents; p is two-sided, '
        "for the hypothesis that the two F1 scores are equal.</p>"
        "<table><thead><tr><th>models</th><th>score</th><th>F1 difference</th><th>95% CI</th><th>p</th></tr>"
        f"</thead><tbody>{''.join(tests)}</tbody></table></section>"
    )


def model_html(n: int, model: ReportModel) -> str:
    """One model's section: scores, MUC, plots, learning curves and errors."""
    scores = model.scores
    errors = scores.get("errors", {})
    bootstrap = scores.get("bootstrap", {})
    curves = learning_curves_png(model.training_log) if model.training_log else None
    return (
        f"<section><h2>{_e(model.name)}</h2>"
        f"<p>{scores['documents']} documents; 95% intervals from {bootstrap.get('samples', 0)} bootstrap "
        f"samples over documents (seed {bootstrap.get('seed', '-')}). Invalid I- starts in the predictions: "
        f"{scores.get('invalid_i_starts', '-')}. Errors: "
        + ", ".join(f"{_e(kind)} {count}" for kind, count in errors.items())
        + ".</p>"
        "<h3>Scores</h3>"
        + scores_table(scores)
        + "<h3>MUC-style matching</h3>"
        + muc_table(scores)
        + "<h3>F1 per label</h3>"
        + _image(f1_bars_png(scores), "per-label F1 with 95% intervals", "no labels")
        + "<h3>Type confusions (spans with matching boundaries)</h3>"
        + _image(
            confusion_png(scores.get("confusion", {})), "type confusion heatmap", "no boundary-matched spans"
        )
        + "<h3>Learning curves</h3>"
        + _image(
            curves,
            "training and validation loss, validation F1 per epoch",
            "no training log (training_log.json) in the model directory",
        )
        + f"<h3>Errors ({len(model.errors)})</h3>"
        + error_browser(f"errors-{n}", model.errors)
        + "</section>"
    )


def render_html(
    models: Sequence[ReportModel], comparison: dict | None = None, title: str = "Evaluation report"
) -> str:
    """The whole page."""
    body = "".join(model_html(n, model) for n, model in enumerate(models))
    if comparison is not None:
        body = comparison_html(comparison) + body
    return page_html(title, body)


def write_report(
    directory: str | Path,
    models: Sequence[ReportModel],
    comparison: dict | None = None,
    payload: dict | None = None,
    title: str = "Evaluation report",
) -> Path:
    """Write ``index.html``, ``errors.jsonl`` and (given the payload) ``scores.json``; each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    page = render_html(models, comparison, title)
    write_atomically(directory / "index.html", lambda target: target.write_text(page, encoding="utf-8"))
    write_jsonl(
        directory / "errors.jsonl", [{"model": m.name, **record} for m in models for record in m.errors]
    )
    if payload is not None:
        write_json(directory / "scores.json", payload)
    return directory / "index.html"
