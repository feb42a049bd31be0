"""A run folder (libprune-run's output_dir) as one self-contained HTML page.

    python3 -m libprune.report runs/fashion_mnist_resnet20_hybrid      # writes .../report.html

The page holds the comparison table (dense / pruned / int8 / pruned+int8), top-1 per epoch with the
pruning cuts and the QAT start marked, top-1 against latency for the rows at each batch size,
latency bars, and the sensitivity scans (report.sensitivity_step: one group cut at a time;
report.quant_sensitivity_bits: one unit quantised at a time) as heat maps of top-1 drops. Figures are drawn with matplotlib (Debian's python3-matplotlib) and embedded as PNG.
"""
import base64
import html
import io
import json
import os
import sys


def _read_run(folder):
    summary_path = os.path.join(folder, "summary.json")
    if not os.path.isfile(summary_path):
        raise FileNotFoundError(f"report: no summary.json in '{folder}'. Fix: pass a finished run's output_dir "
                                "(libprune-run writes summary.json when the run completes)")
    with open(summary_path) as f:
        summary = json.load(f)
    records = []
    metrics = os.path.join(folder, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            records = [json.loads(line) for line in f if line.strip()]
    rows = summary.get("rows") or [dict(summary[k], row=k, label=k) for k in ("dense", "pruned") if k in summary]
    return summary, rows, records


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "<img src='data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + "'>"


def _batches(rows):
    keys = {k for r in rows for k in r if k.startswith("latency_ms_b") and k[12:].isdigit()}
    return sorted(int(k[12:]) for k in keys)


def _figures(rows, records):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = []
    epochs = [r for r in records if r.get("type") == "epoch"]
    if epochs:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot([r["epoch"] for r in epochs], [r["top1"] for r in epochs], "o-", label="top-1 (eval)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ratio = ax.twinx()
        ratio.step([r["epoch"] for r in epochs], [r.get("ratio", 0) for r in epochs], "r--", where="post",
                   label="pruning ratio")
        ratio.set_ylabel("pruning ratio", color="r")
        for r in records:
            if r.get("type") == "prune":
                ax.axvline(r["epoch"], color="r", alpha=0.3)
            if r.get("type") == "qat":
                ax.axvline(r["epoch"], color="g", alpha=0.6)
                ax.annotate("QAT", (r["epoch"], ax.get_ylim()[0]), color="g")
        ax.set_title("accuracy per epoch (red: cuts, green: QAT starts)")
        out.append(_png(fig))
        plt.close(fig)
    timed = [r for r in rows if "latency_ms_b1" in r]
    for b in _batches(timed):
        fig, (scatter, bars) = plt.subplots(1, 2, figsize=(10, 3.2))
        key = f"latency_ms_b{b}"
        for r in timed:
            scatter.plot(r[key], r["accuracy"], "o")
            scatter.annotate(r["label"], (r[key], r["accuracy"]), fontsize=8)
        scatter.set_xlabel(f"latency at batch {b} (ms)")
        scatter.set_ylabel("top-1 (%)")
        scatter.set_title(f"top-1 against latency, batch {b}")
        bars.barh([r["label"] for r in timed], [r[key] for r in timed])
        bars.set_xlabel("ms")
        bars.set_title(f"latency at batch {b}")
        out.append(_png(fig))
        plt.close(fig)
    return out


def _heat_map(drops, row_labels, column_labels, title, what="top-1 drop (pt)"):
    """Drops (top-1 by default) as a heat map: a row per label, a column per setting, the drop in each cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * len(column_labels), 1 + 0.28 * len(row_labels)))
    image = ax.imshow(drops, cmap="Reds", aspect="auto", vmin=0)
    ax.set_xticks(range(len(column_labels)))
    ax.set_xticklabels(column_labels)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=8)
    for i, row in enumerate(drops):
        for j, d in enumerate(row):
            ax.text(j, i, f"{d:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=what)
    ax.set_title(title)
    page = _png(fig)
    plt.close(fig)
    return page


def _sensitivity(scan):
    """The pruning scan: a row per group, a column per ratio."""
    rows = scan["rows"]
    labels = [(r["modules"] or [r["group"]])[0] + (f" +{len(r['modules']) - 1}" if len(r["modules"]) > 1 else "")
              + f" ({r['size']})" for r in rows]
    return _heat_map([[scan["baseline"] - m for m in r["metric"]] for r in rows], labels,
                     [f"-{r:.0%}" for r in scan["ratios"]],
                     f"sensitivity: one group cut at a time (baseline {scan['baseline']:.2f}%)")


def _quant_sensitivity(scan):
    """The quantization scan: a row per int8 unit (named by its layer) and one for all of them, a
    column per bit width."""
    rows = scan["rows"] + [{"unit": "every unit at once", "metric": scan["all"]}]
    labels = [r["unit"].split(" + ")[0] + (" +" + str(r["unit"].count(" + ")) if " + " in r["unit"] else "") for r in rows]
    return _heat_map([[scan["baseline"] - m for m in r["metric"]] for r in rows], labels,
                     [f"{b}-bit" for b in scan["bits"]],
                     f"quantization sensitivity: one unit quantised at a time (float {scan['baseline']:.2f}%)",
                     "argmax agreement lost (pt)" if scan.get("metric") == "agreement" else "top-1 drop (pt)")


def _table(rows):
    dense = rows[0]
    cols = [("top-1 (%)", "accuracy", "{:.2f}"), ("params", "params", "{:,.0f}"), ("MACs", "macs", "{:,.0f}"),
            ("file (KiB)", "size_bytes", "{:.0f}")] + [(f"latency b{b} (ms)", f"latency_ms_b{b}", "{:.3f}")
                                                      for b in _batches(rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _, _ in cols)
    body = []
    for r in rows:
        cells = []
        for _, key, fmt in cols:
            if key not in r:
                cells.append("<td>-</td>")
                continue
            v = r[key] / 1024 if key == "size_bytes" else r[key]
            factor = ""
            if key != "accuracy" and r is not dense and dense.get(key) and r[key]:
                factor = f" <small>({dense[key] / r[key]:.2f}x)</small>"
            cells.append(f"<td>{fmt.format(v)}{factor}</td>")
        body.append(f"<tr><th>{html.escape(r['label'])}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def write_report(folder: str) -> str:
    """Writes <folder>/report.html from summary.json and metrics.jsonl; returns its path."""
    summary, rows, records = _read_run(folder)
    if not rows:
        raise ValueError(f"report: '{folder}/summary.json' has no rows. Fix: rerun with a current libprune-run")
    title = html.escape(f"{summary.get('recipe', '')} ({summary.get('model', '')})")
    notes = (f"{summary.get('epochs', '?')} epochs, {summary.get('cuts', '?')} cuts, quantization "
             f"{summary.get('quantization', 'none')}, {summary.get('threads', '?')} threads; factors are dense / row")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + title + "</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
            f"<h1>{title}</h1><p>{html.escape(notes)}</p>{_table(rows)}"
            + "".join(f"<p>{img}</p>" for img in _figures(rows, records))
            + (f"<p>{_sensitivity(summary['sensitivity'])}</p>" if (summary.get("sensitivity") or {}).get("rows") else "")
            + (f"<p>{_quant_sensitivity(summary['quant_sensitivity'])}</p>"
               if (summary.get("quant_sensitivity") or {}).get("rows") else "")
            + "</body></html>")
    path = os.path.join(folder, "report.html")
    with open(path + ".tmp", "w") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m libprune.report <run folder>", file=sys.stderr)
        return 2
    print("report:", write_report(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
