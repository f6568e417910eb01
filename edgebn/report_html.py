"""report.html: one self-contained page (no scripts, no external files) beside report.json — the
per-layer table, per-layer SQNR and arena-usage plots as inline SVG, and the BatchNorm fold log."""
from __future__ import annotations

import html

__all__ = ["render_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde2ea;padding-bottom:.3em}
.sub{color:#5b6475}.cards{display:flex;gap:1em;flex-wrap:wrap;margin:1.2em 0}
.card{background:#f4f6fa;border-radius:8px;padding:.7em 1.1em;min-width:150px}.card b{display:block;font-size:1.35em}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e8ebf1;text-align:right}
th{background:#f4f6fa;position:sticky;top:0}td.l,th.l{text-align:left}tr:hover td{background:#fafbfd}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b}code{background:#f4f6fa;padding:1px 4px;border-radius:3px}
svg text{font:11px system-ui,sans-serif;fill:#5b6475}
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


def _bar_chart(labels, values, title, unit, width=1040, height=220, highlight_below=None) -> str:
    if not values:
        return "<p class=sub>no data</p>"
    vmax = max(max(values), 1e-9)
    n = len(values)
    left, bottom, top = 50, 40, 20
    bw = (width - left - 10) / n
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{html.escape(title)}">']
    for frac in (0, 0.5, 1):
        y = top + (height - top - bottom) * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e8ebf1"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{vmax * frac:,.0f}</text>')
    for i, (lab, v) in enumerate(zip(labels, values)):
        h = (height - top - bottom) * (v / vmax)
        x = left + i * bw
        color = "#c0392b" if highlight_below is not None and v < highlight_below else "#3b6fd8"
        parts.append(f'<rect x="{x + 1:.1f}" y="{top + (height - top - bottom) - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{html.escape(str(lab))}: {v:,.1f} {unit}</title></rect>')
        if n <= 40:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - bottom + 14}" text-anchor="end" '
                         f'transform="rotate(-35 {x + bw / 2:.1f} {height - bottom + 14})">{html.escape(str(lab)[:14])}</text>')
    parts.append(f'<text x="{left}" y="12">{html.escape(title)} ({unit})</text></svg>')
    return "".join(parts)


def render_html(report: dict) -> str:
    layers = report["layers"]
    rows = []
    for r in layers:
        off = r.get("arena_offset")
        rows.append(
            f"<tr><td class=l>{html.escape(r['name'])}</td><td class=l>{html.escape(r.get('kernel', r['op']))}</td>"
            f"<td>{'x'.join(map(str, r['input_shape']))}</td><td>{'x'.join(map(str, r['output_shape']))}</td>"
            f"<td>{r['macs']:,}</td><td>{r['weight_bytes']:,}</td><td>{'–' if off is None else f'{off:,}'}</td>"
            f"<td>{r['scale']:.4g}</td><td>{r['zero_point']}</td>"
            f"<td class={_sqnr_class(r['sqnr_db'])}>{_fmt_sqnr(r['sqnr_db'])}</td>"
            f"<td class=l><code>{html.escape(r.get('source', '') or '')}</code></td></tr>")
    sq = [(r["name"], r["sqnr_db"]) for r in layers if isinstance(r["sqnr_db"], (int, float))]
    folds = "".join(
        f"<tr><td class=l>{html.escape(f['bn'])}</td><td class=l>{html.escape(f['action'])}</td>"
        f"<td class=l>{html.escape(str(f['into'] or ''))}</td><td class=l>{html.escape(f['reason'])}</td></tr>"
        for f in report["fold_log"]) or "<tr><td class=l colspan=4>no BatchNorm in this model</td></tr>"
    warns = "".join(f"<li>{html.escape(w)}</li>" for w in report.get("warnings", []))
    live = report.get("arena_live_bytes", [])
    live_labels = [r["name"] for r in layers if r.get("arena_offset") is not None] + ["end"]
    cards = [
        ("MACs", f"{report['macs']:,}"), ("weights (flash)", f"{report['flash_bytes']:,} B"),
        ("arena (RAM)", f"{report['arena_bytes']:,} B"), ("arena lower bound", f"{report.get('arena_lower_bound', 0):,} B"),
        ("output SQNR", f"{_fmt_sqnr(report.get('output_sqnr_db'))} dB"), ("target", report["target"]),
    ]
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>edgebn report</title>
<style>{CSS}</style></head><body>
<h1>edgebn compile report</h1>
<div class=sub>model hash <code>0x{report.get('model_hash', 0):08x}</code> · input {'x'.join(map(str, report['input']['shape']))}
 ({report['input']['layout']}) · output {'x'.join(map(str, report['output']['shape']))}</div>
<div class=cards>{''.join(f'<div class=card>{k}<b>{html.escape(str(v))}</b></div>' for k, v in cards)}</div>
{f'<h2>Warnings</h2><ul>{warns}</ul>' if warns else ''}
<h2>Per-layer SQNR (int8 vs float on the calibration set)</h2>
{_bar_chart([n for n, _ in sq], [v for _, v in sq], 'SQNR per layer', 'dB', highlight_below=20)}
<h2>Arena usage over the schedule</h2>
{_bar_chart(live_labels[:len(live)], live, 'bytes live at each step', 'bytes')}
<h2>Layers</h2>
<table><thead><tr><th class=l>layer</th><th class=l>kernel</th><th>input</th><th>output</th><th>MACs</th>
<th>weight B</th><th>arena offset</th><th>scale</th><th>zp</th><th>SQNR dB</th><th class=l>source</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>BatchNorm fold log</h2>
<table><thead><tr><th class=l>BatchNorm</th><th class=l>action</th><th class=l>into</th><th class=l>why</th></tr></thead>
<tbody>{folds}</tbody></table>
</body></html>
"""
