"""report.html: one self-contained page (no scripts, no external files) beside report.json — the
per-layer table, per-layer SQNR and arena-usage plots as inline SVG, and the BatchNorm fold log."""
from __future__ import annotations

import html
import math

__all__ = ["render_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde2ea;padding-bottom:.3em}
.sub{color:#5b6475}.cards{display:flex;gap:1em;flex-wrap:wrap;margin:1.2em 0}
.card{background:#f4f6fa;border-radius:8px;padding:.7em 1.1em;min-width:150px}.card b{display:block;font-size:1.35em}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e8ebf1;text-align:right}
th{background:#f4f6fa;position:sticky;top:0}td.l,th.l{text-align:left}tr:hover td{background:#fafbfd}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b}code{background:#f4f6fa;padding:1px 4px;border-radius:3px}
svg text{font:11px system-ui,sans-serif;fill:#5b6475}svg text.v{fill:#1d2330;font-size:10px}
.warn{background:#fff4e5;border-left:4px solid #e08a00;padding:.6em 1em;border-radius:4px}.warn li{margin:.2em 0}
.legend{font-size:12px;color:#5b6475;margin:.2em 0 0}.sw{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;vertical-align:middle}
"""


def _fmt_sqnr(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return "exact" if v == "inf" else v
    return f"{v:.1f}"


def _sqnr_class(v) -> str:
    if isinstance(v, (int, float)) and v < 20:
        return "bad"
    return "ok" if v is not None else ""


def _nice_step(vmax: float) -> float:
    raw = vmax / 4
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _bar_chart(labels, values, title, unit, width=1040, height=260, highlight_below=None) -> str:
    if not values:
        return "<p class=sub>no data</p>"
    step = _nice_step(max(max(values), 1e-9))
    vmax = step * math.ceil(max(max(values), 1e-9) / step)
    n = len(values)
    labels = [str(lab) for lab in labels]
    left, top = 64, 24
    longest = min(max(len(lab) for lab in labels), 22)
    flat = all(len(lab) * 6.5 <= (width - left - 10) / n - 4 for lab in labels)
    if not flat:     # rotated labels: room below and, for the first one, on the left
        left = max(left, int(0.77 * 6 * longest) - 4)
        height = height + int(0.64 * 6 * longest)
    slot = (width - left - 10) / n
    bw = min(slot - 4, 90.0)                      # bar width, capped so few layers don't give slabs
    bottom = 30 if flat else 24 + int(0.64 * 6 * longest)
    ph = height - top - bottom
    fmt = (lambda v: f"{v:,.0f}") if unit == "bytes" else (lambda v: f"{v:,.1f}")
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{html.escape(title)}">']
    tick = 0.0
    while tick <= vmax + 1e-9:
        y = top + ph * (1 - tick / vmax)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e8ebf1"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:,.0f}</text>')
        tick += step
    for i, (lab, v) in enumerate(zip(labels, values)):
        h = ph * (v / vmax)
        cx = left + (i + 0.5) * slot
        color = "#c0392b" if highlight_below is not None and v < highlight_below else "#3b6fd8"
        parts.append(f'<rect x="{cx - bw / 2:.1f}" y="{top + ph - h:.1f}" width="{max(bw, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}" rx="2"><title>{html.escape(lab)}: {fmt(v)} {unit}</title></rect>')
        if slot >= 30:
            parts.append(f'<text class=v x="{cx:.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle">{fmt(v)}</text>')
        if n <= 60:
            short = html.escape(lab if len(lab) <= 22 else lab[:21] + "…")
            y = top + ph + 14
            if flat:
                parts.append(f'<text x="{cx:.1f}" y="{y}" text-anchor="middle">{short}</text>')
            else:
                parts.append(f'<text x="{cx:.1f}" y="{y}" text-anchor="end" '
                             f'transform="rotate(-40 {cx:.1f} {y})">{short}</text>')
    if highlight_below is not None and highlight_below <= vmax:
        y = top + ph * (1 - highlight_below / vmax)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c0392b" '
                     f'stroke-dasharray="5 4" stroke-width="1.2"><title>{highlight_below:g} {unit}</title></line>')
    parts.append(f'<text x="{left}" y="12">{html.escape(title)} ({unit})</text></svg>')
    return "".join(parts)


def _cost_header(cost: dict | None) -> str:
    """The per-layer cost column's heading: what was counted, where (a bench's record, see
    edgebn/device/bench.py record_cost_in_report)."""
    if not cost:
        return ""
    where = html.escape(str(cost["board"]))
    if cost["unit"] == "cycles" and cost.get("cpu_hz"):
        where += f" @{cost['cpu_hz'] / 1e6:g} MHz"
    elif cost.get("kernels"):
        where += f", {html.escape(str(cost['kernels']))} kernels"
    return f"<th title='{html.escape(cost.get('command', ''))}'>{html.escape(cost['unit'])}<br><small>{where}</small></th>"


def _cost_cell(cost: dict | None, name: str) -> str:
    if not cost:
        return ""
    v = cost["layers"].get(name)
    return f"<td>{'–' if v is None else f'{v:,}'}</td>"


def _outputs_line(report: dict) -> str:
    outs = report.get("outputs") or [report["output"]]
    if len(outs) == 1:
        return f"output {'x'.join(map(str, outs[0]['shape']))}"
    return f"{len(outs)} outputs: " + ", ".join(
        f"{k}: {'x'.join(map(str, o['shape']))} (scale {o['scale']:.4g}, zp {o['zero_point']}, {html.escape(o['layout'])})"
        for k, o in enumerate(outs))


def _output_cards(report: dict) -> list[tuple[str, str]]:
    outs = report.get("outputs") or []
    if len(outs) <= 1:
        return [("output SQNR", f"{_fmt_sqnr(report.get('output_sqnr_db'))} dB")]
    return [(f"output {k} SQNR", f"{_fmt_sqnr(o.get('sqnr_db'))} dB") for k, o in enumerate(outs)]


def render_html(report: dict) -> str:
    layers = report["layers"]
    cost = report.get("cost")
    rows = []
    for r in layers:
        off = r.get("arena_offset")
        rows.append(
            f"<tr><td class=l>{html.escape(r['name'])}</td><td class=l>{html.escape(r.get('kernel', r['op']))}</td>"
            f"<td>{'x'.join(map(str, r['input_shape']))}</td><td>{'x'.join(map(str, r['output_shape']))}</td>"
            f"<td>{r['macs']:,}</td><td>{r['weight_bytes']:,}</td><td>{'–' if off is None else f'{off:,}'}</td>"
            f"<td>{r['scale']:.4g}</td><td>{r['zero_point']}</td><td>int{r.get('bits', 8)}</td>"
            f"<td class={_sqnr_class(r['sqnr_db'])}>{_fmt_sqnr(r['sqnr_db'])}</td>{_cost_cell(cost, r['name'])}"
            f"<td class=l><code>{html.escape(r.get('source', '') or '')}</code></td></tr>")
    sq = [(r["name"], r["sqnr_db"]) for r in layers if isinstance(r["sqnr_db"], (int, float))]
    folds = "".join(
        f"<tr><td class=l>{html.escape(f['bn'])}</td><td class=l>{html.escape(f['action'])}</td>"
        f"<td class=l>{html.escape(str(f['into'] or ''))}</td><td class=l>{html.escape(f['reason'])}</td></tr>"
        for f in report["fold_log"]) or "<tr><td class=l colspan=4>no BatchNorm in this model</td></tr>"
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in report.get("warnings", []))
    live = report.get("arena_live_bytes", [])
    live_labels = [r["name"] for r in layers if r.get("arena_offset") is not None] + ["end"]
    worst = min(sq, key=lambda t: t[1]) if sq else None
    qz = report.get("quantization", {})
    shape_in = report["input"]["shape"]
    dev = "x".join(map(str, shape_in))
    cards = [
        ("MACs", f"{report['macs']:,}"), ("weights (flash)", f"{report['flash_bytes']:,} B"),
        ("arena (RAM)", f"{report['arena_bytes']:,} B"), ("arena lower bound", f"{report.get('arena_lower_bound', 0):,} B"),
        *_output_cards(report),
        ("worst layer SQNR", f"{worst[1]:.1f} dB ({worst[0]})" if worst else "–"), ("target", report["target"]),
    ]
    if cost:
        per_mac = f" ({cost['total'] / cost['macs']:.2f}/MAC)" if cost.get("macs") else ""
        cards.append((f"{cost['unit']} ({cost['board']})", f"{cost['total']:,}{per_mac}"))
    if "compile_seconds" in report:
        cards.append(("compile time", f"{report['compile_seconds']:.1f} s"))
    lib = report.get("library")
    if lib:
        cards.insert(0, ("C library", f"{lib['dir']}/{lib['header']}"))
    boards = report.get("boards", [])
    if boards:
        fit = [b["target"] + (" (PSRAM)" if b["arena_placement"] == "psram" else "") for b in boards if b["fits"]]
        cards.append(("fits", ", ".join(fit) or "no board"))
        gone = [b for b in boards if not b["fits"]]
        if gone:
            cards.append(("left out", "; ".join(f"{b['target']}: {b['reason']}" for b in gone)))
    prec = report.get("precision") or {}
    if prec.get("int16_layers") or prec.get("mode", "int8") != "int8":
        tail = (prec.get("int16_tail") or {}).get("layers")
        text = (f"{prec['mode']}" + (f" with an int16 tail ({', '.join(tail)})" if tail else "") +
                f": {len(prec['int16_layers'])} int16 layers, {len(prec['boundaries'])} boundaries")
        if prec["mode"] == "auto":
            text += (f"; target {prec['min_sqnr']:g} dB {'reached' if prec['reached'] else 'NOT reached'} "
                     f"(lowest layer {prec['min_layer_sqnr_db']} dB, all-int8 {prec['min_layer_sqnr_int8_db']} dB)")
        cards.append(("precision", text))
    qline = ""
    if qz:
        qline = (f" · activations <b>{html.escape(str(qz.get('calibration')))}</b>, weights per channel by "
                 f"<b>{html.escape(str(qz.get('weight_method')))}</b>"
                 + (f", {qz['samples']:,} calibration samples" if qz.get("samples") else ""))
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>edgebn report</title>
<style>{CSS}</style></head><body>
<h1>edgebn compile report</h1>
<div class=sub>model hash <code>0x{report.get('model_hash', 0):08x}</code> · input {dev} on the device
 (model layout {report['input']['layout']}) · {_outputs_line(report)}{qline}</div>
<div class=cards>{''.join(f'<div class=card>{k}<b>{html.escape(str(v))}</b></div>' for k, v in cards)}</div>
{f'<h2>Warnings</h2><div class=warn><ul>{warns}</ul></div>' if warns else ''}
<h2>Per-layer SQNR (int8 vs float on the calibration set)</h2>
<p class=sub>Signal-to-quantization-noise ratio of each layer's int8 output against the float model, errors of
the layers before it included. Higher is better; 6 dB is one bit. Layers below the dashed 20 dB line are red.</p>
{_bar_chart([n for n, _ in sq], [v for _, v in sq], 'SQNR per layer', 'dB', highlight_below=20)}
<h2>Arena usage over the schedule</h2>
<p class=sub>Bytes of activations alive while each layer runs (the arena is the static buffer they share).</p>
{_bar_chart(live_labels[:len(live)], live, 'bytes live at each step', 'bytes')}
<h2>Layers</h2>
{'' if not cost else f"<p class=sub>{html.escape(cost['unit'])} per layer measured by <code>{html.escape(cost.get('command', 'edgebn bench'))} --update-report</code>.</p>"}
<table><thead><tr><th class=l>layer</th><th class=l>kernel</th><th>input</th><th>output</th><th>MACs</th>
<th>weight B</th><th>arena offset</th><th>scale</th><th>zp</th><th>type</th><th>SQNR dB</th>{_cost_header(cost)}<th class=l>source</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>BatchNorm fold log</h2>
<table><thead><tr><th class=l>BatchNorm</th><th class=l>action</th><th class=l>into</th><th class=l>why</th></tr></thead>
<tbody>{folds}</tbody></table>
</body></html>
"""
