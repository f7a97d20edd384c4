// The gateway's status page: polls GET /status (and GET /alerts when the gateway has it) every 2 s and
// redraws. URLs are relative to the page, so it also works behind a proxy that adds a path prefix. Plain DOM, no framework, no build step, nothing loaded from anywhere but this gateway.
// Every value from the gateway is put into the page as text (never as HTML).
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;

  // A state is always shown as symbol + word + colour, so it reads without colour too.
  const STATES = {
    up: { symbol: "●", words: "serving" },
    degraded: { symbol: "▲", words: "serving, but impaired" },
    loading: { symbol: "◌", words: "answers, model not ready" },
    down: { symbol: "✕", words: "not serving" },
    asleep: { symbol: "☾", words: "not running on purpose: expected" },
    unknown: { symbol: "?", words: "not probed yet" },
  };
  // Why a backend does not serve on purpose (/status `dormant`, core.health.Dormancy), in words.
  const DORMANT = {
    host_off: "a host that may be powered off: expected",
    engine_asleep: "engine in sleep mode (idle): woken by the next request",
    model_stopped: "model on demand, not running: the next request for it starts it",
  };
  const OVERALL = {
    ok: { symbol: "●", words: "ok: every backend is up" },
    attention: { symbol: "▲", words: "attention: something needs a look" },
    broken: { symbol: "✕", words: "broken: a backend is down or serves the wrong model" },
  };

  const $ = (id) => document.getElementById(id);
  let lastData = null;
  let lastOkAt = null;
  // Gateway processes (by pid) that answered 404 to /alerts: asked once, not every 2 s (each 404 would
  // count as an error in the gateway's own metrics). A restarted or upgraded gateway is asked again.
  const withoutAlerts = new Set();
  let refreshes = 0;

  // ------------------------------------------------------------------------------------ helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      el.setAttribute(key === "className" ? "class" : key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  // replaceChildren, minus the absent parts (it would print a null as "null").
  function fill(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function clock(date) {
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    let s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return `${m} min ${s} s`;
    const hours = Math.floor(m / 60);
    if (hours < 48) return `${hours} h ${m % 60} min`;
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
  }

  function stateBadge(state, dormant) {
    const known = Object.hasOwn(STATES, state) ? state : "unknown";
    const words = dormant && Object.hasOwn(DORMANT, dormant) ? DORMANT[dormant] : STATES[known].words;
    return h(
      "span",
      { class: `badge state-${known}`, "data-state": state, title: words },
      h("span", { class: "sym", "aria-hidden": "true" }, STATES[known].symbol),
      ` ${state}`,
    );
  }

  function code(text) {
    return h("code", {}, text);
  }

  function list(items, render) {
    const out = [];
    items.forEach((item, i) => {
      if (i) out.push(", ");
      out.push(render ? render(item) : item);
    });
    return out;
  }

  function table(headings, rows, attrs) {
    // Wrapped so a narrow window scrolls the table, not the page.
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        attrs || {},
        h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    );
  }

  // ----------------------------------------------------------------------------------- header

  function renderHeader(data) {
    const gw = data.gateway || {};
    const name = gw.name || "fabric";
    $("fabric-name").textContent = `· ${name}`;
    $("fabric-source").textContent = gw.source ? `fabric file: ${gw.source}` : "";
    const overall = OVERALL[data.status] || { symbol: "?", words: data.status };
    document.title = `${data.status} · ${name} · aifabric`;
    const counts = Object.entries(data.counts || {})
      .sort()
      .map(([state, n]) => `${n} ${state}`)
      .join(" · ");
    $("overall").dataset.status = data.status;
    fill($("overall"),
      h("span", { class: "sym", "aria-hidden": "true" }, overall.symbol),
      h("strong", {}, ` ${overall.words}`),
      counts ? h("span", { class: "counts" }, counts) : null,
    );
  }

  // --------------------------------------------------------------------------------- backends

  function modelsCell(entry) {
    const configured = entry.models || [];
    const served = entry.served_models || [];
    const known = new Set(configured.map((m) => m.configured));
    const lines = configured.map((m) => {
      if (m.served === true) return h("div", { class: "model ok" }, "✓ ", code(m.configured));
      if (m.served === false)
        return h("div", { class: "model bad" }, "✗ ", code(m.configured), " not served");
      return h("div", { class: "model" }, code(m.configured), h("span", { class: "muted" }, " (not listed yet)"));
    });
    // Ids the backend serves that no role sends it: what the drift fix usually points at.
    const others = served.filter((id) => !known.has(id));
    if (others.length) {
      const shown = others.slice(0, 4);
      lines.push(
        h(
          "div",
          { class: "model muted" },
          configured.length ? "also serves " : "serves ",
          list(shown, code),
          others.length > shown.length ? ` +${others.length - shown.length} more` : "",
        ),
      );
    }
    return lines.length ? lines : "–";
  }

  function loadCell(load) {
    const entries = Object.entries(load || {});
    if (!entries.length) return "–";
    return entries.map(([key, value]) => {
      const shown = /usage|perc|ratio/.test(key) ? `${Math.round(value * 100)}%` : String(value);
      return h("span", { class: "chip" }, `${key.replace(/_/g, " ")}: ${shown}`);
    });
  }

  // The line under a backend's reason when it does not serve on purpose: which of the three sleeps.
  function dormantNote(b) {
    // A gateway without `dormant` in /status knew only engine sleep and powered-off hosts.
    const dormant = b.dormant ?? (b.engine_asleep ? "engine_asleep" : b.state === "asleep" ? "host_off" : null);
    if (!dormant || !Object.hasOwn(DORMANT, dormant)) return null;
    const attrs = { class: "muted", "data-dormant": dormant };
    if (dormant === "engine_asleep") attrs["data-engine-asleep"] = "";
    return h("div", attrs, DORMANT[dormant]);
  }

  // A local model's on-demand settings (`local: {start, idle_stop, group, exclusive}`), in words.
  function onDemandWords(o) {
    const parts = [o.start === "on_demand" ? "started on demand" : "started with the others"];
    if (o.idle_stop !== null && o.idle_stop !== undefined) parts.push(`stopped after ${duration(o.idle_stop)} unused`);
    if (o.group) parts.push(o.exclusive ? `one at a time in group ${o.group}` : `group ${o.group}`);
    return parts.join("; ");
  }

  function renderBackends(data) {
    const rows = [];
    const names = Object.keys(data.backends || {}); // the fabric file's order
    for (const name of names) {
      const b = data.backends[name];
      const since = b.for_seconds !== null && b.for_seconds !== undefined ? `for ${duration(b.for_seconds)}` : "";
      rows.push(
        h(
          "tr",
          { "data-backend": name, class: `row-${b.state}` },
          h("th", { scope: "row", class: "name" }, name),
          h("td", { class: "state" }, stateBadge(b.state, b.dormant), h("div", { class: "muted" }, since)),
          h(
            "td",
            { class: "reason" },
            b.reason,
            // A stopped model refuses connections because it is stopped: no failure worth naming.
            b.failure && b.dormant !== "model_stopped" ? h("span", { class: "muted" }, ` (${b.failure})`) : null,
            dormantNote(b),
            b.on_demand ? h("div", { class: "muted", "data-on-demand": "" }, onDemandWords(b.on_demand)) : null,
          ),
          h(
            "td",
            { class: "host" },
            b.host || "–",
            b.host && b.always_on === false ? h("span", { class: "muted" }, " (may sleep)") : null,
            h("div", { class: "url muted" }, b.url || ""),
          ),
          h("td", { class: "kind" }, b.kind || "?"),
          h("td", { class: "num" }, ms(b.probe_latency_ms)),
          h("td", { class: "models" }, modelsCell(b)),
          h("td", { class: "load" }, loadCell(b.load)),
        ),
      );
      for (const message of b.mismatches || []) {
        rows.push(
          h(
            "tr",
            { class: "drift", "data-drift": name },
            h("td", { colspan: "8" }, h("strong", {}, "⚠ Model id drift on ", name, ": "), message),
          ),
        );
      }
    }
    fill($("backends-body"),
      names.length
        ? table(["Backend", "State", "Why", "Host", "Kind", "Probe", "Models", "Load"], rows, {
            class: "backends",
          })
        : h("p", { class: "muted" }, "No backends configured."),
    );
  }

  // ------------------------------------------------------------------------------------ roles

  function routing(t, backendState, dormant) {
    if (t.available) return { key: "available", cls: "ok", text: ["✓ available"] };
    if (t.weight === 0) return { key: "off", cls: "muted", text: ["off (weight 0)"] };
    if (backendState === "asleep" && dormant === "model_stopped")
      return { key: "on-demand", cls: "muted", text: ["☾ model on demand: the next request starts it"] };
    if (t.outlier === "ejected") {
      const back = t.ejected_for_seconds;
      const at = back !== null && back !== undefined ? clock(new Date(Date.now() + back * 1000)) : null;
      return {
        key: "ejected",
        cls: "bad",
        text: [
          "✕ ejected",
          back !== null && back !== undefined ? ` until ${at} (${duration(back)} more)` : "",
          h("div", { class: "muted" }, `after failed requests; ejected ${t.ejections} time${t.ejections === 1 ? "" : "s"}`),
        ],
      };
    }
    if (t.outlier === "half_open") return { key: "half_open", cls: "warn", text: ["◐ on trial after an ejection"] };
    if (backendState && !["up", "degraded", "unknown"].includes(backendState))
      return { key: `backend-${backendState}`, cls: "bad", text: [`✕ backend ${backendState}`] };
    if (t.model_mismatch) return { key: "mismatch", cls: "bad", text: ["✕ model id not served"] };
    return { key: "unavailable", cls: "bad", text: ["✕ unavailable"] };
  }

  // The estimated queue at the engine; "~" marks a count known only from the gateway's in-flight requests.
  function queued(load) {
    if (!load) return "";
    return load.source === "engine" ? String(load.waiting) : `~${load.waiting}`;
  }

  function overflowBounds(o) {
    const parts = [];
    if (o.queue_depth !== null && o.queue_depth !== undefined) parts.push(`${o.queue_depth} queued`);
    if (o.estimated_wait !== null && o.estimated_wait !== undefined) parts.push(`a ${duration(o.estimated_wait)} wait`);
    return parts.join(" or ");
  }

  function renderRole(role, data) {
    const backends = data.backends || {};
    const total = role.targets.length;
    const avail = role.available_targets;
    // Models on demand not running are started by the next request: nothing is broken.
    const onDemand = role.targets.some((t) => (backends[t.backend] || {}).dormant === "model_stopped");
    const availCls = avail === 0 && !onDemand ? "bad" : avail < total ? "warn" : "ok";
    const rows = [];
    for (const t of role.targets) {
      const backendState = (backends[t.backend] || {}).state;
      const dormant = (backends[t.backend] || {}).dormant;
      const r = routing(t, backendState, dormant);
      rows.push(
        h(
          "tr",
          { "data-target": `${role.name}/${t.backend}/${t.model}`, "data-routing": r.key },
          h("td", {}, h("span", { class: "name" }, t.backend), " ", backendState ? stateBadge(backendState, dormant) : null),
          h("td", {}, code(t.model)),
          h("td", { class: "num" }, String(t.weight)),
          h("td", { class: `routing ${r.cls}` }, r.text),
          h("td", { class: "num" }, String(t.outstanding)),
          h("td", { class: "num", "data-queue": "" }, queued(t.load)),
          h("td", { class: "num" }, ms(t.ewma_latency_ms)),
          h("td", { class: "num" }, `${t.successes} / ${t.failures}`),
        ),
      );
      if (t.model_mismatch) {
        rows.push(
          h("tr", { class: "drift", "data-drift": `${role.name}/${t.backend}` }, h("td", { colspan: "8" }, "⚠ ", t.model_mismatch)),
        );
      }
    }
    const fallbacks = role.fallbacks.map((name) => {
      const fb = (data.roles || {})[name];
      const note = fb ? ` (${fb.available_targets}/${fb.targets.length} available)` : "";
      return h("span", {}, code(name), h("span", { class: "muted" }, note));
    });
    return h(
      "article",
      { class: "role", "data-role": role.name },
      h(
        "header",
        {},
        h("h3", {}, role.name),
        h("span", { class: "chip" }, role.kind),
        h("span", { class: `avail ${availCls}` }, `${avail} of ${total} target${total === 1 ? "" : "s"} available`),
      ),
      role.description ? h("p", { class: "desc" }, role.description) : null,
      h(
        "p",
        { class: "meta" },
        "call as ",
        list([role.name, ...role.aliases], code),
        role.fallbacks.length ? [" · then falls back to ", list(fallbacks)] : " · no fallback",
        ` · balance ${role.balance}`,
        role.affinity && role.targets.length > 1 ? " · session affinity" : "",
        role.overflow ? ` · overflows at ${overflowBounds(role.overflow)} (${role.overflowed} request${role.overflowed === 1 ? "" : "s"} so far)` : "",
      ),
      role.saturated
        ? h("p", { class: "warn", "data-overflowing": "" }, "Every target of this role is saturated: new requests overflow to its fallbacks until a queue drains.")
        : null,
      avail === 0 && onDemand
        ? h(
            "p",
            { class: "muted", "data-on-demand-role": "" },
            role.fallbacks.length
              ? "No target of this role is running: the next request starts its model on demand, and its fallbacks answer meanwhile."
              : "No target of this role is running: the next request starts its model on demand and waits while it loads.",
          )
        : avail === 0
          ? h(
              "p",
              { class: "bad" },
              role.fallbacks.length
                ? "No target of this role can take requests: its fallbacks answer."
                : "No target of this role can take requests, and it has no fallback: requests to it fail.",
            )
          : null,
      table(["Backend", "Model", "Weight", "Routing", "In flight", "Queued", "Latency (EWMA)", "OK / failed"], rows, {
        class: "targets",
      }),
    );
  }

  function renderRoles(data) {
    const roles = Object.values(data.roles || {}); // the fabric file's order
    fill($("roles-body"),
      ...(roles.length ? roles.map((r) => renderRole(r, data)) : [h("p", { class: "muted" }, "No roles configured.")]),
    );
  }

  // ------------------------------------------------------------------------- how to call it

  function renderConnect(data) {
    const base = `${window.location.origin}/v1`;
    const auth = (data.gateway || {}).auth_required;
    const rows = [];
    const roles = data.roles || {};
    for (const name of Object.keys(roles).sort()) {
      rows.push(h("tr", { "data-model-name": name }, h("td", {}, code(name)), h("td", {}, roles[name].kind), h("td", { class: "muted" }, "role")));
    }
    for (const [alias, role] of Object.entries(data.aliases || {}).sort()) {
      rows.push(
        h("tr", { "data-model-name": alias }, h("td", {}, code(alias)), h("td", {}, (roles[role] || {}).kind || ""), h("td", { class: "muted" }, "alias of ", code(role))),
      );
    }
    const chat = Object.values(roles).find((r) => r.kind === "chat");
    const example = chat
      ? [
          `curl -s ${base}/chat/completions \\\n`,
          auth ? `  -H "Authorization: Bearer $FABRIC_KEY" \\\n` : "",
          `  -H 'Content-Type: application/json' \\\n`,
          `  -d '{"model": "${chat.name}", "messages": [{"role": "user", "content": "hello"}]}'`,
        ].join("")
      : null;
    fill($("connect-body"),
      h("p", {}, "Base URL ", code(base), " (OpenAI-compatible: set it as the client's ", code("base_url"), ")."),
      h(
        "p",
        { "data-auth": auth ? "required" : "open" },
        auth
          ? ["API key required: send ", code("Authorization: Bearer <key>"), " with a key of ", code("gateway.api_keys"),
             " or one made by ", code("aifabric keys create"), "."]
          : "No API key needed (no gateway.api_keys, and no key made by `aifabric keys create`).",
      ),
      rows.length ? table(["model", "kind", ""], rows, { class: "names" }) : null,
      example ? h("pre", {}, example) : null,
    );
  }

  // --------------------------------------------------------------------------------- requests

  function renderRequests(data) {
    const req = data.requests || { total: 0, errors: 0, by_role: {}, by_status: {} };
    const gw = data.gateway || {};
    const share = req.total ? ` (${((100 * req.errors) / req.total).toFixed(1)}%)` : "";
    const rows = Object.entries(req.by_role || {})
      .sort()
      .map(([role, c]) => h("tr", {}, h("td", {}, code(role)), h("td", { class: "num" }, String(c.total)), h("td", { class: "num" }, String(c.errors))));
    const statuses = Object.entries(req.by_status || {})
      .sort()
      .map(([status, n]) => h("span", { class: `chip ${Number(status) >= 400 ? "bad" : ""}` }, `HTTP ${status}: ${n}`));
    fill($("requests-body"),
      h(
        "p",
        { class: "summary" },
        h("strong", {}, String(req.total)),
        req.total === 1 ? " request, " : " requests, ",
        h("strong", {}, String(req.errors)),
        `${req.errors === 1 ? " error" : " errors"}${share}`,
      ),
      statuses.length ? h("p", {}, statuses) : null,
      rows.length ? table(["role", "requests", "errors"], rows, { class: "by-role" }) : null,
      // `requests.workers`: how many processes' counters are summed here (serve --workers N); an older
      // gateway does not say, and shows its answering worker's own.
      h(
        "p",
        { class: "muted" },
        req.workers > 1
          ? `Counted by all ${req.workers} workers of this gateway since they started (this refresh answered by pid ${gw.pid}).`
          : `Counted by this gateway process (pid ${gw.pid}) since it started` +
              (gw.workers > 1 ? `; it is one of ${gw.workers} workers, each counts its own.` : "."),
      ),
    );
  }

  // ------------------------------------------------------------------------------------ usage

  function money(value) {
    return Number(value || 0).toFixed(4);
  }

  function renderUsage(data) {
    const usage = data.usage || { enabled: false };
    const gw = data.gateway || {};
    if (!usage.enabled) {
      fill($("usage-body"), h("p", { class: "muted" }, "The usage ledger is off (usage: off in the fabric file)."));
      return;
    }
    const keys = Object.entries(usage.by_key || {})
      .sort()
      .map(([key, t]) =>
        h(
          "tr",
          { "data-key": key },
          h("td", {}, code(key)),
          h("td", { class: "num" }, String(t.requests)),
          h("td", { class: "num" }, String(t.tokens_in)),
          h("td", { class: "num" }, String(t.tokens_out)),
          h("td", { class: "num" }, money(t.cost)),
          h("td", { class: "num" }, money((usage.spend_today || {})[key])),
        ),
      );
    const budgets = (usage.budgets || []).map((b) =>
      h(
        "tr",
        { "data-budget": `${b.kind}:${b.name}`, class: b.exhausted ? "bad" : b.fraction >= 0.8 ? "warn" : "" },
        h("td", {}, `${b.kind} `, code(b.name)),
        h("td", { class: "num" }, b.budget),
        h("td", { class: "num" }, money(b.spent)),
        h("td", { class: "num" }, `${Math.round(100 * b.fraction)}%`),
        h("td", {}, b.exhausted ? (b.kind === "backend" ? "spent: out of routing" : "spent: 429") : "within"),
      ),
    );
    fill($("usage-body"),
      keys.length
        ? table(["key", "requests", "tokens in", "tokens out", "cost", "cost today (all)"], keys, { class: "by-key" })
        : h("p", { class: "muted" }, "No request recorded yet."),
      budgets.length ? table(["budget of", "budget", "spent", "used", "state"], budgets, { class: "budgets" }) : null,
      h(
        "p",
        { class: "muted" },
        `Ledger ${usage.ledger}: ${usage.written} rows written, ${usage.pending} waiting`,
        usage.dropped ? `, ${usage.dropped} DROPPED (queue full)` : "",
        usage.last_error ? `; last error: ${usage.last_error}` : "",
        // `usage.workers`: how many processes' totals and row counts are summed here (serve --workers N);
        // an older gateway does not say, and shows its answering worker's own.
        usage.workers > 1
          ? `. Totals per key and row counts are all ${usage.workers} workers' since they started (this refresh answered by pid ${gw.pid})`
          : `. Totals per key are this process's (pid ${gw.pid}) since it started` +
              (gw.workers > 1 ? `; it is one of ${gw.workers} workers, each counts its own` : ""),
        "; `aifabric usage` reports the whole ledger.",
      ),
    );
  }

  // ----------------------------------------------------------------------------------- alerts

  function alertField(alert, ...keys) {
    for (const key of keys) {
      if (alert[key] !== undefined && alert[key] !== null && alert[key] !== "") return alert[key];
    }
    return null;
  }

  function renderAlerts(payload) {
    const alerts = Array.isArray(payload) ? payload : (payload && (payload.alerts || payload.active)) || [];
    const section = $("alerts");
    section.hidden = false;
    if (!alerts.length) {
      fill($("alerts-body"), h("p", { class: "ok" }, "✓ No active alerts."));
      return;
    }
    const rows = alerts.map((a) => {
      const severity = String(alertField(a, "severity", "level") || "info");
      const since = alertField(a, "for_seconds", "active_for_seconds");
      return h(
        "tr",
        { "data-alert": alertField(a, "id", "key", "name", "rule") || "" },
        h("td", {}, h("span", { class: `badge sev-${severity}` }, severity)),
        h("td", {}, String(alertField(a, "name", "rule", "title") || "")),
        h("td", {}, String(alertField(a, "subject", "backend", "role", "target") || "")),
        h("td", {}, String(alertField(a, "message", "summary", "description", "reason") || "")),
        h("td", { class: "muted" }, since !== null ? `for ${duration(since)}` : String(alertField(a, "since", "started_at") || "")),
      );
    });
    fill($("alerts-body"), table(["severity", "alert", "on", "what", "since"], rows, { class: "alerts" }));
  }

  async function refreshAlerts(pid) {
    if (withoutAlerts.has(pid)) return;
    let response;
    try {
      response = await fetchWithTimeout("alerts");
    } catch {
      return; // the /status fetch reports an unreachable gateway
    }
    if (response.status === 404) {
      $("alerts").hidden = true; // this gateway has no alerting: nothing to show
      withoutAlerts.add(pid);
      return;
    }
    if (!response.ok) {
      $("alerts").hidden = false;
      fill($("alerts-body"), h("p", { class: "muted" }, `The gateway answered HTTP ${response.status} to /alerts.`));
      return;
    }
    renderAlerts(await response.json());
  }

  // ------------------------------------------------------------------------------------- loop

  function fetchWithTimeout(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    // Relative to the page, without the user:key@ a browser may have opened it with (fetch refuses a URL
    // holding credentials); the browser sends the key it authenticated the page with by itself.
    const url = new URL(path, document.baseURI);
    url.username = "";
    url.password = "";
    return fetch(url, { cache: "no-store", signal: controller.signal, headers: { accept: "application/json" } }).finally(
      () => clearTimeout(timer),
    );
  }

  function showProblem(kind, message) {
    document.body.dataset.connection = kind;
    document.title = `${kind} · ${lastData ? (lastData.gateway || {}).name || "fabric" : "gateway"} · aifabric`;
    const banner = $("banner");
    banner.hidden = false;
    banner.dataset.kind = kind;
    const stale = lastOkAt
      ? ` Showing what it said at ${clock(lastOkAt)} (${duration((Date.now() - lastOkAt) / 1000)} ago).`
      : "";
    fill(banner, h("strong", {}, kind === "unreachable" ? "Gateway unreachable" : "Gateway error"), `: ${message}.${stale}`);
    $("main").classList.add("stale");
    // The last verdict is history now: grey, and said to be so.
    const overall = $("overall");
    if (!lastOkAt) {
      overall.dataset.status = "stale";
      fill(overall, h("strong", {}, "? no answer from the gateway yet"));
    } else if (overall.dataset.status !== "stale") {
      overall.dataset.status = "stale";
      overall.prepend(h("span", { class: "stale-note" }, "last known: "));
    }
    $("updated").textContent = lastOkAt ? `last update ${clock(lastOkAt)}` : "no data yet";
  }

  function render(data) {
    renderHeader(data);
    renderBackends(data);
    renderRoles(data);
    renderConnect(data);
    renderRequests(data);
    renderUsage(data);
  }

  async function refresh() {
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    let response;
    try {
      response = await fetchWithTimeout("status");
    } catch (err) {
      const why = err && err.name === "AbortError" ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : "could not connect";
      showProblem("unreachable", `${why} to ${window.location.host}`);
      return;
    }
    if (!response.ok) {
      showProblem("error", `it answered HTTP ${response.status} to /status`);
      return;
    }
    let data;
    try {
      data = await response.json();
    } catch {
      showProblem("error", "its /status answer is not JSON");
      return;
    }
    lastData = data;
    lastOkAt = new Date();
    render(lastData);
    document.body.dataset.connection = "ok";
    $("banner").hidden = true;
    $("main").classList.remove("stale");
    $("updated").textContent = `updated ${clock(lastOkAt)}`;
    await refreshAlerts((data.gateway || {}).pid);
  }

  function recordError(message) {
    const box = $("page-errors");
    box.hidden = false;
    box.append(h("div", { class: "page-error" }, `Page error: ${message}`));
  }

  async function loop() {
    try {
      await refresh();
    } catch (err) {
      recordError(err && err.stack ? err.stack : String(err));
    }
    setTimeout(loop, REFRESH_MS);
  }

  window.addEventListener("error", (event) => recordError(event.message));
  window.addEventListener("unhandledrejection", (event) => recordError(String(event.reason)));
  loop();
})();
