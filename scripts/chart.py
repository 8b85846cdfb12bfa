#!/usr/bin/env python3
"""Turns the figures of `lockd bench --tsv PATH` into an SVG bar chart.

    python3 scripts/chart.py [docs/bench.tsv] [docs/bench.svg]

One group per workload: the echo ceiling and lockd, each bar scaled to the
larger of the two, labelled with its figure, and lockd's ratio to echo
(W6 is a cost, bytes of RSS per connection, so lower is better there).
Standard library only: the SVG is written by hand.
"""

import csv
import sys
from xml.sax.saxutils import escape

COLOURS = {"echo": "#9aa5b1", "lockd": "#2f6fb0"}
TARGETS = {"W1": 0.85, "W2": 0.85, "W5": 0.85}


def human(value, unit):
    if unit == "B/conn":
        return f"{value / 1024:.1f} KiB/conn"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix} {unit}"
    return f"{value:.0f} {unit}"


def read(path):
    machine = ""
    rows = []
    with open(path, newline="") as f:
        lines = []
        for line in f:
            if line.startswith("#"):
                machine = line[1:].strip()
            else:
                lines.append(line)
    for row in csv.DictReader(lines, delimiter="\t"):
        if row["rate"]:
            rows.append(row)
    return machine, rows


def chart(machine, rows):
    workloads = []
    for row in rows:
        if row["workload"] not in workloads:
            workloads.append(row["workload"])
    bar_h, gap, left, width = 22, 18, 70, 460
    label_w = 330
    top = 60
    height = top + len(workloads) * (2 * bar_h + gap) + 40
    total_w = left + width + label_w
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{total_w}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">lockd vs. echo ceiling '
        f"(same load generator, same run)</text>",
        f'<text x="10" y="42" fill="#555">{escape(machine)}</text>',
    ]
    y = top
    for w in workloads:
        group = {r["target"]: r for r in rows if r["workload"] == w}
        scale = max(float(r["rate"]) for r in group.values()) or 1.0
        out.append(
            f'<text x="10" y="{y + bar_h + 4}" font-weight="bold">{escape(w)}</text>'
        )
        for i, target in enumerate(("echo", "lockd")):
            r = group.get(target)
            if r is None:
                continue
            value = float(r["rate"])
            length = max(1.0, width * value / scale)
            by = y + i * bar_h
            out.append(
                f'<rect x="{left}" y="{by}" width="{length:.1f}" height="{bar_h - 4}" '
                f'fill="{COLOURS[target]}"/>'
            )
            text = f"{target}: {human(value, r['unit'])}, {r['connections']} conns"
            if target == "lockd" and r["ratio"]:
                ratio = float(r["ratio"])
                text += f" — {ratio:.2f}× echo"
                if w in TARGETS:
                    text += " ✓" if ratio >= TARGETS[w] else f" (target {TARGETS[w]})"
            out.append(
                f'<text x="{left + width + 8}" y="{by + bar_h - 8}">{escape(text)}</text>'
            )
        y += 2 * bar_h + gap
    out.append(
        f'<text x="10" y="{height - 14}" fill="#555">Bars scaled per workload to the larger '
        f"figure. W6 is RSS per idle connection (lower is better).</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/bench.tsv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/bench.svg"
    machine, rows = read(src)
    if not rows:
        sys.exit(f"chart.py: no figures in {src}")
    with open(dst, "w") as f:
        f.write(chart(machine, rows))
    print(f"chart.py: wrote {dst}")


if __name__ == "__main__":
    main()
