// Canary Analyzer dashboard: the rollouts table and one rollout's page, live over server-sent
// events (/events), actions through the JSON API with the token the user gives (kept in
// sessionStorage: this browser tab's session only). Every value from the API is put in the page
// as text (textContent), never as HTML.
"use strict";
(() => {
  const TOKEN_KEY = "canary-analyzer.api-token";
  const TERMINAL = ["succeeded", "rolled_back", "failed"];
  const PHASES = ["pending", "progressing", "paused", "promoting", "succeeded", "rolled_back", "failed"];
  const DECISION_COLOR = { promote: "ok", rollback: "bad", pause: "warn" };
  const COMMANDS = {
    promote: "skip the rest of the current step (or pause) and go to the next step",
    pause: "stop deciding; the weight stays where it is",
    resume: "continue the paused rollout",
    abort: "roll back: all traffic to the stable version",
  };
  const state = { rollouts: [], allRuns: false, phase: "", sort: { key: "name", dir: 1 }, page: null };

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const fmtSeconds = (s) => (s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
  function age(iso) {
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (!Number.isFinite(s)) return "–";
    if (s < 0) return "0s";
    return s < 120 ? `${Math.round(s)}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`;
  }
  const time = (iso) => (iso ? iso.replace("T", " ").replace("Z", "").slice(0, 19) : "–");
  const stepText = (r) => (r.step < 0 ? "–" : `${r.step + 1} of ${r.steps.length}`);
  const badge = (phase) => h("span", { class: `badge ${phase}`, "data-phase": phase }, phase.replace("_", " "));
  const bar = (w) => { const b = h("span", { class: "bar" }, h("span")); b.firstChild.style.width = `${w}%`; return b; };

  async function api(path, options) {
    const res = await fetch(path, { cache: "no-store", ...(options || {}) });
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const err = new Error((body && body.message) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // ------------------------------------------------------------------ routing
  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "rollouts" && parts[1]) return { name: parts[1], generation: parts[2] ? Number(parts[2]) : null };
    return null;
  }
  const view = document.getElementById("view");

  async function render() {
    state.page = route();
    if (state.page) await renderRollout(true);
    else await renderList();
  }

  // ------------------------------------------------------------------ the rollouts table
  const COLUMNS = [
    ["name", "Name"], ["namespace", "Namespace"], ["phase", "Phase"], ["step", "Step"], ["weight", "Weight"],
    ["canary_version", "Canary"], ["stable_version", "Stable"], ["created_at", "Age"], ["reason", "Last decision"],
  ];

  async function renderList() {
    if (state.allRuns) {
      try { state.runs = (await api("/rollouts?all_runs=true")).rollouts; } catch (e) { return showError(e); }
    } else if (!state.rollouts.length) {
      try { state.rollouts = (await api("/rollouts")).rollouts; } catch (e) { return showError(e); }
    }
    const rows = (state.allRuns ? state.runs : state.rollouts).filter((r) =>
      !state.phase || (state.phase === "active" ? !TERMINAL.includes(r.phase) : r.phase === state.phase));
    const { key, dir } = state.sort;
    rows.sort((a, b) => {
      const x = key === "created_at" ? -Date.parse(a[key]) : a[key], y = key === "created_at" ? -Date.parse(b[key]) : b[key];
      return (x < y ? -1 : x > y ? 1 : a.generation < b.generation ? 1 : -1) * dir;
    });
    const filter = h("select", { id: "phase-filter", "aria-label": "filter by phase", onchange: (e) => { state.phase = e.target.value; renderList(); } },
      h("option", { value: "" }, "every phase"), h("option", { value: "active" }, "active (not finished)"),
      PHASES.map((p) => h("option", { value: p }, p.replace("_", " "))));
    filter.value = state.phase;
    const past = h("input", { type: "checkbox", id: "all-runs", checked: state.allRuns, onchange: (e) => { state.allRuns = e.target.checked; renderList(); } });
    const head = h("tr", {}, COLUMNS.map(([k, label]) => h("th", {
      "data-key": k, "aria-sort": k === key ? (dir > 0 ? "ascending" : "descending") : null,
      onclick: () => { state.sort = { key: k, dir: key === k ? -dir : 1 }; renderList(); },
    }, label)));
    const body = h("tbody", {}, rows.map((r) => h("tr", { "data-rollout": r.name, "data-generation": r.generation },
      h("td", {}, h("a", { href: `#/rollouts/${encodeURIComponent(r.name)}${state.allRuns ? "/" + r.generation : ""}` }, r.name),
        state.allRuns ? h("span", { class: "muted" }, ` #${r.generation}`) : null),
      h("td", {}, r.namespace), h("td", {}, badge(r.phase)), h("td", { class: "num" }, stepText(r)),
      h("td", { class: "num weight", "data-weight": r.weight }, bar(r.weight), `${r.weight}%`),
      h("td", {}, r.canary_version), h("td", {}, r.stable_version),
      h("td", { class: "num", title: r.created_at }, age(r.created_at)), h("td", { class: "reason" }, r.last_decision ? r.last_decision.reason : r.reason))));
    view.replaceChildren(...[
      h("div", { class: "toolbar" }, h("h1", {}, "Rollouts"), h("label", {}, "Phase ", filter),
        h("label", {}, past, " past runs"), h("span", { class: "muted" }, `${rows.length} shown`)),
      h("table", { id: "rollouts" }, h("thead", {}, head), body),
      rows.length ? null : h("p", { class: "muted" }, "No rollouts yet: start one with `canary start POLICY`.")].filter(Boolean));
  }

  // ------------------------------------------------------------------ one rollout
  async function renderRollout(full) {
    const page = state.page;
    const q = page.generation ? `?generation=${page.generation}` : "";
    const base = `/rollouts/${encodeURIComponent(page.name)}`;
    let detail, series, ticks;
    try {
      [detail, series, ticks] = await Promise.all([api(base + q), api(`${base}/series${q}`), api(`${base}/ticks${q}`)]);
    } catch (e) { return showError(e); }
    if (state.page !== page) return;  // navigated away meanwhile
    page.detail = detail;
    const newest = !page.generation || detail.runs[0] === detail.generation;
    const parts = [header(detail, newest), banner(detail), actions(detail, newest), charts(detail, series), decisionLog(ticks.ticks), more(detail)];
    const status = document.getElementById("action-status");
    const keep = status && !full ? status.cloneNode(true) : null;
    view.replaceChildren(...parts.filter(Boolean));
    if (keep) document.getElementById("action-status").replaceWith(keep);
  }

  function header(d, newest) {
    const steps = h("div", { class: "steps", "aria-label": "steps" }, d.steps.map((s, i) =>
      h("span", { class: i === d.step ? "current" : i < d.step ? "done" : "" }, s)));
    return h("div", {},
      h("p", {}, h("a", { href: "#/" }, "← all rollouts")),
      h("div", { class: "head" },
        h("div", {},
          h("h1", {}, `${d.name} `, h("span", { class: "muted" }, `#${d.generation}`), " ", badge(d.phase),
            newest ? null : h("span", { class: "muted" }, " (a past run)")),
          h("div", { class: "muted" }, `${d.namespace} / ${d.service}: ${d.stable_version} → ${d.canary_version}`)),
        h("div", { class: "links" }, d.links.map((l) => h("a", { href: l.url, target: "_blank", rel: "noopener noreferrer" }, l.label)))),
      h("div", { class: "facts" },
        h("div", {}, h("b", { id: "weight-value", "data-weight": d.weight }, `${d.weight}%`), h("span", {}, "canary weight")),
        h("div", {}, h("b", {}, stepText(d)), h("span", {}, "step")),
        h("div", {}, h("b", {}, String(d.tick_seq)), h("span", {}, "ticks")),
        h("div", {}, h("b", {}, age(d.created_at)), h("span", {}, "age")),
        h("div", {}, h("b", {}, d.owner || "–"), h("span", {}, "ticked by"))),
      steps);
  }

  function banner(d) {
    const out = [];
    if (["paused", "rolled_back", "failed"].includes(d.phase)) {
      const what = { paused: "Paused", rolled_back: "Rolled back", failed: "Failed" }[d.phase];
      const lines = [h("p", {}, h("b", {}, `${what}: `), d.reason)];
      if (d.phase === "paused" && d.pause_until) lines.push(h("p", {}, `Resumes by itself at ${time(d.pause_until)} UTC.`));
      if (d.power) {
        lines.push(h("p", { class: "power" }, `Power: at current traffic, a regression would need about ${fmtSeconds(d.power.seconds)} more to be detected (the judge's estimate at tick ${d.power.tick}).`));
      }
      if (d.phase === "failed") lines.push(h("p", {}, "The router's traffic state is unknown: check it by hand."));
      out.push(h("div", { class: `banner ${d.phase}`, id: "banner", role: "status" }, lines));
    }
    if (d.pending_commands.length) {
      out.push(h("div", { class: "banner queued", id: "queued" }, d.pending_commands.map((c) =>
        h("p", {}, `${c.command} queued by ${c.actor} at ${time(c.requested_at)}: applied at the next tick.`))));
    }
    return out.length ? h("div", {}, out) : null;
  }

  function actions(d, newest) {
    const can = token() && newest && !TERMINAL.includes(d.phase);
    const why = !token() ? "give the API token (top right) to act" : !newest ? "a past run" : TERMINAL.includes(d.phase) ? `the rollout is ${d.phase}` : null;
    return h("div", { class: "actions" },
      Object.keys(COMMANDS).map((cmd) => h("button", {
        type: "button", "data-command": cmd, title: why || COMMANDS[cmd],
        disabled: !can || (cmd === "resume" && d.phase !== "paused") || (cmd === "pause" && d.phase === "paused"),
        class: cmd === "abort" ? "danger" : cmd === "promote" ? "primary" : "",
        onclick: () => confirmCommand(d, cmd),
      }, cmd[0].toUpperCase() + cmd.slice(1))),
      h("span", { id: "action-status", role: "status" }, why && !token() ? "Actions need the API token." : ""));
  }

  function confirmCommand(d, cmd) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = `${cmd[0].toUpperCase() + cmd.slice(1)} ${d.name} #${d.generation} (now ${d.phase} at ${d.weight}%)? This will ${COMMANDS[cmd]}.`;
    document.getElementById("confirm-ok").textContent = cmd[0].toUpperCase() + cmd.slice(1);
    dialog.returnValue = "";
    dialog.onclose = () => { if (dialog.returnValue === "ok") send(d, cmd); };
    dialog.showModal();
  }

  async function send(d, cmd) {
    const status = document.getElementById("action-status");
    status.className = "";
    status.textContent = `${cmd}: sending…`;
    try {
      const res = await api(`/rollouts/${encodeURIComponent(d.name)}/${cmd}`, { method: "POST", headers: { Authorization: `Bearer ${token()}` } });
      status.className = "accepted";
      status.textContent = `${cmd} accepted: queued as command ${res.command_id}, applies ${res.applies}.`;
    } catch (e) {
      status.className = "refused";
      status.textContent = `${cmd} refused (${e.status || "no answer"}): ${e.message}`;
    }
    if (state.page) renderRollout(false);
  }

  function charts(d, s) {
    const marks = s.decisions.map((m) => ({ t: m.t, color: DECISION_COLOR[m.decision], kind: m.decision, label: m.decision }));
    const cards = [];
    const card = (title, chart, note) => h("div", { class: "card" }, h("h3", {}, title), chart, note ? h("p", { class: "note" }, note) : null);
    cards.push(card("Canary weight", Charts.line({
      title: "canary weight", times: s.t, marks, yMin: 0, yMax: 100, yLabel: "%",
      series: [{ label: "weight %", values: s.weight, color: "canary", stepped: true }],
      hlines: d.steps.filter((x) => x.endsWith("%")).map((x) => ({ label: x, y: Number(x.slice(0, -1)), color: "muted" })),
    }), "Dotted verticals: promote (green), rollback (red), pause (amber)."));
    cards.push(card("Error rate per version", Charts.line({
      title: "error rate", times: s.t, marks, yLabel: "% errors",
      series: [{ label: "canary", values: s.error_rate_percent.canary, color: "canary" },
        { label: "stable", values: s.error_rate_percent.stable, color: "stable" }],
    }), "Per tick window: errors / requests."));
    const lat = s.latency_ms;
    cards.push(card("Latency per version", Charts.line({
      title: "latency", times: s.t, marks, yLabel: "ms", yLog: true,
      series: [["p50", 1], ["p90", 2], ["p99", null]].flatMap(([q, dash]) => [
        { label: `canary ${q}`, values: lat[q].canary, color: "canary", dash },
        { label: `stable ${q}`, values: lat[q].stable, color: "stable", dash }]),
    }), "Quantiles interpolated from histogram buckets (estimates)."));
    for (const c of s.checks) {
      const ratio = c.tolerance_ratio !== null;  // a canary/stable ratio with a tolerance
      const expected = c.expected.length ? [{ label: "expected: the router's canary weight", values: c.expected, color: "muted", stepped: true }] : [];
      cards.push(card(`Check ${c.name}: estimate`, Charts.line({
        title: `${c.name} estimate`, times: c.t, marks,
        yLabel: c.estimate_label,
        series: [{ label: "estimate", values: c.estimate, color: "accent" }].concat(expected),
        bands: c.low.some((v) => v !== null) ? [{ label: "anytime-valid confidence band", low: c.low, high: c.high }] : [],
        hlines: ratio ? [{ label: "1 (equal)", y: 1, color: "muted" }, { label: c.tolerance_label, y: c.tolerance_ratio, color: "bad" }] : [],
      })));
      cards.push(card(`Check ${c.name}: evidence`, Charts.line({
        title: `${c.name} evidence`, times: c.t, marks, yLog: c.kind !== "failures",
        yLabel: c.kind === "p-value" ? "p-value" : c.kind === "failures" ? "failures" : "e-value",
        series: [{ label: c.evidence_label, values: c.evidence, color: "bad" }]
          .concat(c.e_ok.some((v) => v !== null) ? [{ label: "non-inferiority evidence", values: c.e_ok, color: "ok" }] : []),
        hlines: c.threshold ? [{ label: `threshold ${c.threshold}`, y: c.threshold, color: "muted" }] : [],
      }), c.kind === "e-value" ? "A check decides when its evidence crosses the threshold." : null));
    }
    return h("section", {}, h("h2", {}, "Over time"), h("div", { class: "grid", id: "charts" }, cards));
  }

  function decisionLog(ticks) {
    const rows = ticks.slice().reverse().map((t) => {
      const d = t.decision || t.action;
      return h("tr", { "data-seq": t.seq },
        h("td", { class: "num" }, String(t.seq)), h("td", {}, time(t.t1 || t.scheduled_at)),
        h("td", { class: "num" }, t.weight_before === t.weight_after ? `${t.weight_after}%` : `${t.weight_before}→${t.weight_after}%`),
        h("td", { class: `d-${d}` }, d + (t.command ? ` (${t.command})` : "")), h("td", { class: "sentence" }, t.reason));
    });
    return h("section", {}, h("h2", {}, "Decision log"),
      h("div", { class: "scroll" }, h("table", { class: "log", id: "decision-log" },
        h("thead", {}, h("tr", {}, ["tick", "time (UTC)", "weight", "decision", "sentence"].map((x) => h("th", {}, x)))),
        h("tbody", {}, rows))));
  }

  function more(d) {
    const runs = d.runs.length > 1 ? h("p", {}, "Runs: ", d.runs.map((g) => h("a", { href: `#/rollouts/${encodeURIComponent(d.name)}/${g}`, class: g === d.generation ? "current" : "" }, `#${g} `))) : null;
    return h("section", {},
      runs,
      h("h2", {}, "Events"),
      h("ul", {}, d.events.slice().reverse().map((e) => h("li", {}, `${time(e.at)} `, h("b", {}, e.kind), `: ${e.message}`))),
      h("h2", {}, "Policy (secrets redacted)"),
      h("pre", { id: "policy" }, JSON.stringify(d.policy, null, 2)));
  }

  function showError(e) {
    view.replaceChildren(h("p", { class: "error", role: "alert" }, `${e.status ? e.status + ": " : ""}${e.message}`), h("p", {}, h("a", { href: "#/" }, "← all rollouts")));
  }

  // ------------------------------------------------------------------ live updates
  function live() {
    const dot = document.getElementById("live");
    const es = new EventSource("/events");
    es.onopen = () => { dot.dataset.state = "live"; dot.textContent = "live"; };
    es.onerror = () => { dot.dataset.state = "down"; dot.textContent = "reconnecting"; };
    es.addEventListener("rollouts", (ev) => {
      const rollouts = JSON.parse(ev.data).rollouts;
      state.rollouts = rollouts;
      if (!state.page) { renderList(); return; }
      const page = state.page, d = page.detail;
      if (!d || page.generation) return;  // a past run does not change
      const now = rollouts.find((r) => r.name === page.name);
      if (now && (now.id !== d.id || now.tick_seq !== d.tick_seq || now.phase !== d.phase || now.updated_at !== d.updated_at)) renderRollout(false);
    });
  }

  // ------------------------------------------------------------------ the token
  function tokenUi() {
    const form = document.getElementById("token-form"), set = document.getElementById("token-set");
    const show = () => { form.hidden = !!token(); set.hidden = !token(); };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const v = document.getElementById("token-input").value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      document.getElementById("token-input").value = "";
      show();
      if (state.page) renderRollout(true);
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      show();
      if (state.page) renderRollout(true);
    });
    show();
  }

  tokenUi();
  window.addEventListener("hashchange", render);
  render();
  live();
})();
