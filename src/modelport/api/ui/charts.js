// Hand-drawn SVG line charts (no library): a time axis over the window, a y axis from 0, one
// polyline per series, a dot per sample, and a text summary for screen readers.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 180, L = 48, R = 12, T = 12, B = 26;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function fmt(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2).replace(/\.?0+$/, "") || "0";
}

function hhmm(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

/**
 * series: [{name, cls, values: [{t: epoch ms, v: number|null}]}]
 */
export function lineChart({ title, unit, series, from, to }) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption);

  const all = series.flatMap((s) => s.values.filter((p) => p.v !== null && p.v !== undefined).map((p) => p.v));
  const top = niceMax(Math.max(0, ...all));
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);

  const latest = series.map((s) => {
    const last = [...s.values].reverse().find((p) => p.v !== null && p.v !== undefined);
    return `${s.name} ${last ? fmt(last.v) : "–"} ${unit}`;
  }).join(", ");
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: latest ${latest}; peak ${fmt(Math.max(0, ...all))} ${unit}` });
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
  }
  svg.append(el("text", { x: L, y: H - 6, class: "tick" }, hhmm(from)));
  svg.append(el("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "tick" }, hhmm(to)));
  svg.append(el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "tick" }, unit));

  for (const s of series) {
    // a gap in the line where a minute has no value (null)
    let run = [];
    const flush = () => {
      if (run.length > 1) svg.append(el("polyline", { points: run.join(" "), class: `line ${s.cls}` }));
      run = [];
    };
    for (const p of s.values) {
      if (p.v === null || p.v === undefined) { flush(); continue; }
      run.push(`${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
      svg.append(el("circle", { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, class: `dot ${s.cls}` }));
    }
    flush();
  }
  figure.append(svg);
  if (series.length > 1) {
    const legend = document.createElement("p");
    legend.className = "legend";
    for (const s of series) {
      const item = document.createElement("span");
      item.className = `key ${s.cls}`;
      item.textContent = s.name;
      legend.append(item);
    }
    figure.append(legend);
  }
  return figure;
}

/** The four charts of a deployment from GET /deployments/{id}/metrics. */
export function metricsCharts(metrics) {
  const points = metrics.points || [];
  const interval = metrics.interval_seconds || 60;
  const times = points.map((p) => Date.parse(p.at));
  const sampled = metrics.sampled_at ? Date.parse(metrics.sampled_at) : 0;
  const to = Math.max(Date.now(), sampled, ...times);
  const from = to - (metrics.window_seconds || 3600) * 1000;
  const series = (key, f = (v) => v) => points.map((p, i) => ({ t: times[i], v: p[key] === null ? null : f(p[key]) }));
  return [
    lineChart({ title: "Request rate", unit: "req/s", from, to,
      series: [{ name: "requests", cls: "s1", values: series("requests", (v) => v / interval) }] }),
    lineChart({ title: "Error rate", unit: "%", from, to,
      series: [{ name: "errors", cls: "s3", values: series("error_rate", (v) => v * 100) }] }),
    lineChart({ title: "Latency", unit: "ms", from, to, series: [
      { name: "p50", cls: "s1", values: series("p50_ms") },
      { name: "p99", cls: "s2", values: series("p99_ms") },
    ] }),
    lineChart({ title: "Batch size", unit: "rows", from, to,
      series: [{ name: "mean rows per batch", cls: "s4", values: series("mean_batch_rows") }] }),
  ];
}
