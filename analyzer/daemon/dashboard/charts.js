// Hand-written SVG line charts for the dashboard (no third-party code).
// Charts.line(spec) returns a <div class="chart"> with an <svg> and a legend. spec:
//   times: [ISO string | null]               x values (one per point)
//   series: [{label, values, color, dash, stepped}]   color: canary stable accent ok bad warn muted
//   bands: [{label, low, high}]              shaded between two value lists (a confidence band)
//   hlines: [{label, y, color}]              horizontal reference lines (thresholds, tolerances)
//   marks: [{t, label, color}]               vertical decision markers
//   yLog, yMin, yMax, yLabel, format         y scale options; format(y) -> tick text
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 220, M = { l: 52, r: 14, t: 10, b: 26 };

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  function niceTicks(lo, hi, n) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // ticks of a log axis (bounds in log10): the decades, or 1-2-5 within a narrow range
  function logTicks(lo, hi) {
    const out = [];
    for (const mults of [[1], [1, 2, 5], [1, 2, 3, 5, 7]]) {
      out.length = 0;
      for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
        for (const m of mults) {
          const v = m * Math.pow(10, e), t = Math.log10(v);
          if (t >= lo && t <= hi) out.push(v);
        }
      }
      if (out.length >= 3) break;
    }
    return out.length > 7 ? out.filter((v, i) => i % Math.ceil(out.length / 6) === 0) : out;
  }

  function defaultFormat(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
    if (a >= 100) return v.toFixed(0);
    return String(+v.toPrecision(3));
  }

  function clock(ms) {
    const d = new Date(ms);
    return d.toISOString().slice(11, 19);
  }

  function line(spec) {
    const times = spec.times.map((t) => (t ? Date.parse(t) : NaN));
    const xs = times.filter(Number.isFinite);
    const box = document.createElement("div");
    box.className = "chart";
    if (!xs.length) {
      box.append(Object.assign(document.createElement("p"), { className: "note", textContent: "no ticks yet" }));
      return box;
    }
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 - x0 < 1000) { x0 -= 1000; x1 += 1000; }
    x1 += (x1 - x0) * 0.03;  // room after the last tick: a step up at the end stays visible
    const ok = (v) => finite(v) && (!spec.yLog || v > 0);
    const ys = [];
    for (const s of spec.series || []) ys.push(...s.values.filter(ok));
    for (const b of spec.bands || []) ys.push(...b.low.filter(ok), ...b.high.filter(ok));
    for (const h of spec.hlines || []) if (ok(h.y)) ys.push(h.y);
    let y0 = spec.yMin !== undefined ? spec.yMin : Math.min(...ys);
    let y1 = spec.yMax !== undefined ? spec.yMax : Math.max(...ys);
    if (!ys.length) { y0 = spec.yLog ? 0.1 : 0; y1 = spec.yLog ? 10 : 1; }
    const T = (v) => (spec.yLog ? Math.log10(v) : v);
    let t0 = T(y0), t1 = T(y1);
    if (t1 - t0 < 1e-9) { t0 -= spec.yLog ? 1 : Math.abs(t0) * 0.1 || 1; t1 += spec.yLog ? 1 : Math.abs(t1) * 0.1 || 1; }
    const pad = (t1 - t0) * 0.06;
    if (spec.yMin === undefined) t0 -= pad;
    if (spec.yMax === undefined) t1 += pad;
    const px = (x) => M.l + ((x - x0) / (x1 - x0)) * (W - M.l - M.r);
    const py = (v) => H - M.b - ((T(v) - t0) / (t1 - t0)) * (H - M.t - M.b);
    const fmt = spec.format || defaultFormat;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title || "chart" });
    const axis = el("g", { class: "axis" });
    const yticks = spec.yLog ? logTicks(t0, t1) : niceTicks(t0, t1, 5);
    for (const v of yticks) {
      const y = py(v);
      if (y < M.t - 1 || y > H - M.b + 1) continue;
      axis.append(el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: "gridline" }));
      axis.append(el("text", { x: M.l - 6, y: y + 3, "text-anchor": "end" }, fmt(v)));
    }
    for (const x of niceTicks(x0 / 1000, x1 / 1000, 5).map((s) => s * 1000)) {
      const X = px(x);
      if (X < M.l + 20 || X > W - M.r - 24) continue;  // a label cut by the edge helps nobody
      axis.append(el("text", { x: X, y: H - 8, "text-anchor": "middle" }, clock(x)));
    }
    if (spec.yLabel) axis.append(el("text", { x: 12, y: M.t + (H - M.t - M.b) / 2, transform: `rotate(-90 12 ${M.t + (H - M.t - M.b) / 2})`, "text-anchor": "middle" }, spec.yLabel));
    svg.append(axis);
    const clipId = "c" + Math.random().toString(36).slice(2);
    const clip = el("clipPath", { id: clipId });
    clip.append(el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b }));
    svg.append(clip);
    const plot = el("g", { "clip-path": `url(#${clipId})` });
    for (const b of spec.bands || []) {
      let seg = [];
      const flush = () => {
        if (seg.length) {
          const pts = seg.map((i) => `${px(times[i])},${py(b.high[i])}`)
            .concat(seg.slice().reverse().map((i) => `${px(times[i])},${py(b.low[i])}`));
          plot.append(el("polygon", { points: pts.join(" "), class: "band" }));
        }
        seg = [];
      };
      times.forEach((t, i) => (Number.isFinite(t) && ok(b.low[i]) && ok(b.high[i]) ? seg.push(i) : flush()));
      flush();
    }
    for (const h of spec.hlines || []) {
      if (!ok(h.y)) continue;
      const y = py(h.y);
      plot.append(el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: `hline c-${h.color || "muted"}` }));
      plot.append(el("text", { x: W - M.r - 4, y: y - 3, "text-anchor": "end", class: `hline-label c-${h.color || "muted"}`, stroke: "none" }, h.label));
    }
    for (const m of spec.marks || []) {
      const t = Date.parse(m.t);
      if (!Number.isFinite(t)) continue;
      const mk = el("line", { x1: px(t), x2: px(t), y1: M.t, y2: H - M.b, class: `mark c-${m.color}` });
      mk.append(el("title", {}, m.label));
      plot.append(mk);
    }
    for (const s of spec.series || []) {
      let d = "", prev = null, run = 0;
      const dot = () => { if (run === 1) plot.append(el("circle", { cx: prev[0], cy: prev[1], r: 2.5, class: `c-${s.color}` })); };
      times.forEach((t, i) => {
        const v = s.values[i];
        if (!Number.isFinite(t) || !ok(v)) { if (prev) dot(); prev = null; run = 0; return; }
        const X = px(t), Y = py(v);
        if (prev === null) d += `M${X},${Y}`;
        else d += s.stepped ? `H${X}V${Y}` : `L${X},${Y}`;
        prev = [X, Y];
        run += 1;
      });
      if (prev && !s.stepped) dot();
      if (s.stepped && prev) d += `H${W - M.r}`;
      if (d) plot.append(el("path", { d, class: `series c-${s.color}${s.dash ? " dash-" + s.dash : ""}`, "data-label": s.label }));
    }
    svg.append(plot);
    svg.append(el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "frame" }));
    box.append(svg);
    const legend = document.createElement("div");
    legend.className = "legend";
    const entry = (label, color, kind) => {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.className = `c-${color}`;
      if (kind === "band") i.style.height = "8px";
      span.append(i, label);
      legend.append(span);
    };
    for (const s of spec.series || []) entry(s.label, s.color);
    for (const b of spec.bands || []) entry(b.label, "accent", "band");
    for (const h of spec.hlines || []) entry(h.label, h.color || "muted");
    const kinds = [...new Set((spec.marks || []).map((m) => m.color + "|" + m.kind))];
    for (const k of kinds) { const [c, kind] = k.split("|"); entry(kind, c); }
    box.append(legend);
    return box;
  }

  return { line };
})();
