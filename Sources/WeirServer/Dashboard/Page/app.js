"use strict";
(function () {
  const TOKEN_KEY = "weir.adminToken";
  const REASONS = ["requests", "tokens", "concurrency", "too_large"];
  const state = { token: null, snapshot: null, abort: null, generation: 0, action: null };
  const $ = (id) => document.getElementById(id);

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null) continue;
      if (name === "class") node.className = value; else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function svg(tag, attributes) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }
  function format(n) { return Number(n).toLocaleString("en-US"); }

  // --- API -------------------------------------------------------------------
  async function api(method, path, body) {
    const response = await fetch(path, {
      method, cache: "no-store",
      headers: Object.assign({ "Authorization": "Bearer " + state.token },
                             body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    if (!response.ok) {
      const message = json && json.error && json.error.message ? json.error.message : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return json;
  }

  // --- Sign-in ---------------------------------------------------------------
  async function signIn(token, fromStorage) {
    state.token = token;
    $("login-error").hidden = true;
    try {
      const snapshot = await api("GET", "/admin/v1/usage");
      sessionStorage.setItem(TOKEN_KEY, token);
      $("login").hidden = true;
      $("main").hidden = false;
      $("logout").hidden = false;
      $("token").value = "";
      render(snapshot);
      stream();
    } catch (error) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      if (!fromStorage || error.status) {
        $("login-error").textContent = "Sign-in refused: " + error.message;
        $("login-error").hidden = false;
      }
    }
  }
  function signOut(message) {
    state.generation += 1;
    if (state.abort) state.abort.abort();
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("main").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    setStatus("signed out", false);
    if (message) { $("login-error").textContent = message; $("login-error").hidden = false; }
  }
  function setStatus(text, live) {
    $("status").textContent = text;
    $("status").classList.toggle("live", !!live);
  }

  // --- Usage stream (fetch, so the token goes in a header) ----------------------
  async function stream() {
    const generation = ++state.generation;
    if (state.abort) state.abort.abort();
    const abort = new AbortController();
    state.abort = abort;
    while (generation === state.generation) {
      try {
        const response = await fetch("/admin/v1/usage/stream", {
          headers: { "Authorization": "Bearer " + state.token, "Accept": "text/event-stream" },
          cache: "no-store", signal: abort.signal,
        });
        if (response.status === 401 || response.status === 403) {
          signOut("The admin token was refused; sign in again.");
          return;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        setStatus("live", true);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            handleEvent(block);
          }
        }
      } catch (error) {
        if (generation !== state.generation) return;
        setStatus("reconnecting (" + error.message + ")", false);
      }
      if (generation !== state.generation) return;
      setStatus("reconnecting", false);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  function handleEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event !== "usage" || data.length === 0) return;
    try { render(JSON.parse(data.join("\n"))); } catch (e) { setStatus("bad event: " + e.message, false); }
  }

  // --- Rendering ---------------------------------------------------------------
  function render(snapshot) {
    state.snapshot = snapshot;
    const query = $("search").value.trim().toLowerCase();
    const sort = $("sort").value;
    const showIdle = $("show-idle").checked;
    let accounts = snapshot.accounts.filter((a) => !query || a.id.toLowerCase().includes(query));
    if (sort === "name") accounts.sort((a, b) => a.id.localeCompare(b.id));
    else if (sort === "refusals") accounts.sort((a, b) => b.refused - a.refused || b.closeness - a.closeness || a.id.localeCompare(b.id));
    else accounts.sort((a, b) => b.closeness - a.closeness || b.refused - a.refused || a.id.localeCompare(b.id));
    const shown = accounts.slice(0, 200);
    const cards = shown.map((account) => card(account, snapshot, showIdle));
    $("accounts").replaceChildren(...cards);
    const refused = snapshot.accounts.reduce((sum, a) => sum + a.refused, 0);
    const waiting = snapshot.accounts.reduce((sum, a) => sum + (a.waiting || 0), 0);
    $("summary").textContent = shown.length + " of " + snapshot.accounts_total + " accounts shown \u00b7 "
      + format(refused) + " refusals in the last " + snapshot.minutes + " minutes"
      + (waiting > 0 ? " \u00b7 " + format(waiting) + " calls waiting for room" : "");
    $("summary").dataset.sequence = snapshot.sequence;
    if (state.token) setStatus("live \u00b7 update " + snapshot.sequence + " at " + new Date().toLocaleTimeString(), true);
  }

  function card(account, snapshot, showIdle) {
    const level = account.closeness >= 1 ? "over" : account.closeness >= 0.8 ? "near" : "ok";
    const node = el("div", { class: "account " + level, "data-account": account.id, "data-closeness": account.closeness });
    const tier = el("span", { class: "tier" + (account.pinned_tier ? " pinned" : ""), "data-tier": account.tier }, account.tier);
    node.append(el("div", { class: "account-head" },
      el("span", { class: "account-id" }, account.id), tier,
      el("span", { class: "meta" }, "recharged " + account.recharges + " \u00b7 from " + account.sources.join(", ")),
      el("span", { class: "closeness" }, Math.round(account.closeness * 100) + "% of closest limit")));

    const limits = el("div", { class: "limits" });
    let idle = 0;
    for (const limit of account.limits) {
      if (!showIdle && limit.used === 0) { idle += 1; continue; }
      const ratio = limit.limit === 0 ? 0 : limit.used / limit.limit;
      const levelClass = ratio >= 1 ? "over" : ratio >= 0.8 ? "near" : "ok";
      const fill = el("div", { class: "fill" });
      fill.style.width = Math.min(100, ratio * 100).toFixed(1) + "%";
      const models = limit.models.filter((m) => m).join(", ");
      const name = limit.api + (models ? " \u00b7 " + models : "");
      limits.append(el("div", {
          class: "limit " + levelClass, "data-rule": limit.rule, "data-scope": limit.scope,
          "data-model": limit.models.join(","), "data-dimension": limit.dimension,
          "data-used": limit.used, "data-limit": limit.limit, title: "rule " + limit.rule + ", resets in " + limit.reset_ms + " ms" },
        el("span", { class: "limit-name", title: name }, name),
        el("span", { class: "dimension" }, limit.dimension),
        el("div", { class: "bar" }, fill),
        el("span", { class: "figures" }, format(limit.used) + " / " + format(limit.limit))));
    }
    if (idle > 0) limits.append(el("div", { class: "idle-note" }, idle + " idle limit" + (idle === 1 ? "" : "s") + " not shown"));
    node.append(limits);
    const axis = el("div", { class: "chart-axis" }, el("span", {}, "\u2212" + snapshot.minutes + " min"), el("span", {}, "now"));
    node.append(el("div", { class: "chart-row" }, el("div", {}, chart(account, snapshot.minutes), axis),
      el("span", { class: "chart-label" }, format(account.refused) + " refused, last " + snapshot.minutes + " min"
        + (account.waiting > 0 ? " \u00b7 " + format(account.waiting) + " waiting now" : ""))));

    const actions = el("div", { class: "actions" });
    const recharge = el("button", { type: "button", class: "recharge" }, "Recharge\u2026");
    recharge.addEventListener("click", () => openAction("recharge", account));
    const pin = el("button", { type: "button", class: "pin" }, "Pin tier\u2026");
    pin.addEventListener("click", () => openAction("pin", account));
    const override = el("button", { type: "button", class: "override" }, "Override\u2026");
    override.addEventListener("click", () => openAction("override", account));
    actions.append(recharge, pin, override);
    node.append(actions);
    return node;
  }

  /// Refusals per minute, stacked by reason, oldest minute on the left.
  function chart(account, minutes) {
    const width = 300, height = 48, gap = 1;
    const barWidth = width / minutes;
    const totals = new Array(minutes).fill(0);
    for (const reason of REASONS) {
      const series = account.refusals[reason];
      if (series) series.forEach((count, i) => { totals[i] += count; });
    }
    const peak = Math.max(1, ...totals);
    const root = svg("svg", { class: "refusals", width, height, viewBox: "0 0 " + width + " " + height,
      role: "img", "aria-label": "refusals per minute", "data-total": account.refused, "data-peak": peak });
    const title = svg("title", {});
    title.textContent = "Refusals per minute over the last " + minutes + " minutes (peak " + peak + ")";
    root.append(title);
    root.append(svg("line", { class: "axis", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }));
    for (let i = 0; i < minutes; i++) {
      let y = height - 1;
      for (const reason of REASONS) {
        const series = account.refusals[reason];
        const count = series ? series[i] : 0;
        if (!count) continue;
        const h = Math.max(1, (count / peak) * (height - 4));
        y -= h;
        const rect = svg("rect", { class: reason, x: (i * barWidth + gap / 2).toFixed(2), y: y.toFixed(2),
          width: (barWidth - gap).toFixed(2), height: h.toFixed(2), "data-minute": i - minutes + 1, "data-count": count });
        const tip = svg("title", {});
        tip.textContent = count + " " + reason + " refusal" + (count === 1 ? "" : "s") + ", " + (minutes - 1 - i) + " min ago";
        rect.append(tip);
        root.append(rect);
      }
    }
    return root;
  }

  function legend() {
    const node = $("legend");
    node.replaceChildren(el("span", {}, "refusals by reason:"));
    for (const reason of REASONS) {
      const item = el("span", {}, reason.replace("_", " "));
      item.style.setProperty("--swatch", "var(--" + reason + ")");
      node.append(item);
    }
  }

  // --- Admin actions (each confirmed in a dialog) ---------------------------------
  function field(label, input) {
    input.id = "action-" + label.toLowerCase().replace(/[^a-z]+/g, "-");
    return [el("label", { for: input.id }, label), input];
  }
  function openAction(kind, account) {
    const snapshot = state.snapshot;
    const fields = $("action-fields");
    fields.replaceChildren();
    $("action-error").hidden = true;
    state.action = { kind, account: account.id, known: account.sources.includes("registry") || account.sources.includes("config") };
    if (kind === "recharge") {
      $("action-title").textContent = "Recharge " + account.id;
      const amount = el("input", { type: "number", min: "0.01", step: "0.01", value: "10" });
      fields.append(...field("Amount", amount));
    } else if (kind === "pin") {
      $("action-title").textContent = "Pin the tier of " + account.id;
      const select = el("select", {});
      select.append(el("option", { value: "" }, "(no pin: follow recharges)"));
      for (const tier of snapshot.tiers) select.append(el("option", { value: tier }, tier));
      select.value = account.pinned_tier || "";
      fields.append(...field("Tier", select));
    } else {
      $("action-title").textContent = "Set an override for " + account.id;
      const rule = el("select", {});
      for (const r of snapshot.rules) rule.append(el("option", { value: r.name }, r.name + " (" + r.api + ")"));
      const model = el("select", {});
      const dimension = el("select", {});
      const refill = () => {
        const r = snapshot.rules.find((x) => x.name === rule.value);
        model.replaceChildren(el("option", { value: "" }, "(every model of the rule)"));
        for (const m of (r ? r.models : [])) model.append(el("option", { value: m }, m));
        dimension.replaceChildren();
        for (const d of (r ? r.dimensions : [])) dimension.append(el("option", { value: d }, d));
        updateSummary();
      };
      rule.addEventListener("change", refill);
      const value = el("input", { type: "number", min: "1", step: "1", value: "100" });
      fields.append(...field("Rule", rule), ...field("Model", model), ...field("Dimension", dimension), ...field("Limit", value));
      refill();
    }
    for (const input of fields.querySelectorAll("input, select")) {
      input.addEventListener("input", updateSummary);
      input.addEventListener("change", updateSummary);
    }
    updateSummary();
    $("action-dialog").showModal();
  }
  function describe() {
    const a = state.action;
    const create = a.known ? "" : " (the account is created in the registry first)";
    if (a.kind === "recharge") return "Recharge " + a.account + " by " + $("action-amount").value + create + "?";
    if (a.kind === "pin") {
      const tier = $("action-tier").value;
      return (tier ? "Pin " + a.account + " to the " + tier + " tier" : "Remove the tier pin of " + a.account) + create + "?";
    }
    const model = $("action-model").value;
    return "Set " + $("action-dimension").value + " = " + $("action-limit").value + " for " + a.account
      + " on rule " + $("action-rule").value + (model ? " (model " + model + ")" : "")
      + " (replaces the account's overrides of that rule and model)?";
  }
  function updateSummary() { if (state.action) $("action-summary").textContent = describe(); }

  async function confirmAction() {
    const a = state.action;
    if (!a) return;
    const path = "/admin/v1/accounts/" + encodeURIComponent(a.account);
    const button = $("action-confirm");
    button.disabled = true;
    try {
      let result;
      if (a.kind === "recharge") {
        const amount = Number($("action-amount").value);
        if (!a.known) await api("PUT", path, {});
        result = await api("POST", path + "/recharges", { amount });
        toast("Recharged " + a.account + ": tier " + result.tier);
      } else if (a.kind === "pin") {
        const tier = $("action-tier").value;
        result = await api("PUT", path, { tier: tier || null });
        toast(a.account + ": tier " + result.tier + (result.pinned_tier ? " (pinned)" : ""));
      } else {
        const current = a.known ? await api("GET", path) : { overrides: [] };
        const rule = $("action-rule").value, model = $("action-model").value || null;
        const dimension = $("action-dimension").value, value = Number($("action-limit").value);
        const overrides = (current.overrides || []).filter((o) => !(o.rule === rule && (o.model || null) === model));
        const previous = (current.overrides || []).find((o) => o.rule === rule && (o.model || null) === model) || {};
        const entry = Object.assign({}, previous, { rule });
        if (model) entry.model = model; else delete entry.model;
        entry[dimension] = value;
        overrides.push(entry);
        result = await api("PUT", path, { overrides });
        toast(a.account + ": override set on " + rule);
      }
      $("action-dialog").close();
      state.action = null;
    } catch (error) {
      $("action-error").textContent = error.message;
      $("action-error").hidden = false;
    } finally {
      button.disabled = false;
    }
  }
  function toast(text) {
    const node = $("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
  }

  // --- Wiring --------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    legend();
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token, false);
    });
    $("logout").addEventListener("click", () => signOut(null));
    for (const id of ["search", "sort", "show-idle"]) {
      for (const type of ["input", "change"]) {
        $(id).addEventListener(type, () => { if (state.snapshot) render(state.snapshot); });
      }
    }
    // Enter in a field must not close the dialog unconfirmed.
    $("action-form").addEventListener("submit", (event) => event.preventDefault());
    $("action-cancel").addEventListener("click", () => { state.action = null; $("action-dialog").close(); });
    $("action-confirm").addEventListener("click", confirmAction);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved, true);
  });
})();