// The API Key Management Page, over app.js (the key, the API, the alert, signing in).
// Every piece of text that comes from the API is written with textContent, never innerHTML.
"use strict";

(function () {
  const { $, ApiError, storeKey, api, showAlert, clearAlert, required } = window.kreaserve;
  const USAGE_DAYS = 30;
  const session = window.kreaserve.signing({
    busy,
    load: refresh,
    signedIn: () => $("balance-title").focus(),
    failed,
    clear,
  });

  // --- small helpers -------------------------------------------------------------------

  function el(tag, { text, className, attrs } = {}) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    }
    return node;
  }

  const creditFormat = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 4,
  });

  function credits(value) {
    return typeof value === "number" ? creditFormat.format(value) : "–";
  }

  function timeCell(unix, fallback) {
    const cell = el("td");
    if (typeof unix !== "number") {
      cell.append(el("span", { text: fallback, className: "muted" }));
      return cell;
    }
    const date = new Date(unix * 1000);
    const iso = date.toISOString();
    cell.append(el("time", {
      text: iso.slice(0, 16).replace("T", " "),
      attrs: { datetime: iso, title: iso.slice(0, 19).replace("T", " ") + " UTC" },
    }));
    return cell;
  }

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  function setBusy(busy) {
    document.body.setAttribute("aria-busy", busy ? "true" : "false");
    for (const button of document.querySelectorAll("#signed-in button, #sign-in-form button")) {
      if (button.id === "secret-copy" || button.id === "secret-dismiss") continue;
      button.disabled = busy;
    }
  }

  async function busy(work) {
    setBusy(true);
    try {
      return await work();
    } finally {
      setBusy(false);
    }
  }

  // Errors of signed-in actions: a key that stopped working signs the person out.
  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      session.signOut();
      showAlert("Your key is not valid any more or has been revoked, so you have been " +
        "signed out.");
      return;
    }
    showAlert(err instanceof Error ? err.message : String(err));
  }

  // --- the secret, shown once ----------------------------------------------------------

  function showSecret(name, secret, note) {
    $("secret-name").textContent = "“" + name + "”";
    $("secret-value").value = secret;
    $("secret-copied").textContent = note || "";
    $("secret-box").hidden = false;
    $("secret-value").focus();
    $("secret-value").select();
  }

  function hideSecret() {
    $("secret-value").value = "";
    $("secret-name").textContent = "";
    $("secret-copied").textContent = "";
    $("secret-box").hidden = true;
  }

  async function copySecret() {
    const input = $("secret-value");
    const secret = input.value;
    if (!secret) return;
    try {
      if (!navigator.clipboard) throw new Error("no clipboard API");
      await navigator.clipboard.writeText(secret);
      $("secret-copied").textContent = "Copied to the clipboard.";
    } catch (_) {
      input.focus();
      input.select();
      const copied = document.execCommand && document.execCommand("copy");
      $("secret-copied").textContent = copied
        ? "Copied to the clipboard."
        : "Could not copy automatically: the key is selected, press Ctrl+C (⌘C) to copy it.";
    }
  }

  // --- rendering -----------------------------------------------------------------------

  function renderBalance(balance) {
    for (const [id, field] of [["balance-balance", "balance"], ["balance-reserved", "reserved"],
      ["balance-available", "available"]]) {
      $(id).textContent = credits(balance[field]);
      $(id).dataset.value = String(balance[field]);
    }
    $("balance-group").textContent = balance.user_group;
  }

  function renderUsage(usage) {
    $("usage-credits").textContent = credits(usage.total_credits);
    $("usage-credits").dataset.value = String(usage.total_credits);
    $("usage-tasks").textContent = String(usage.total_tasks);
    $("usage-range").textContent = usage.start + " to " + usage.end;
    const body = $("usage-body");
    body.replaceChildren();
    for (const row of usage.data) {
      const tr = el("tr");
      tr.append(
        el("td", { text: row.date }),
        el("td", { text: row.model }),
        el("td", { text: row.quality }),
        el("td", { text: row.tasks, className: "num" }),
        el("td", { text: credits(row.credits), className: "num" }),
      );
      body.append(tr);
    }
    $("usage-table").hidden = usage.data.length === 0;
    $("usage-empty").hidden = usage.data.length !== 0;
  }

  function renderKeys(keys) {
    const body = $("keys-body");
    body.replaceChildren();
    // live keys first, then revoked ones; each group in the API's order (oldest first)
    const ordered = keys.filter((key) => !key.revoked).concat(keys.filter((key) => key.revoked));
    for (const key of ordered) body.append(keyRow(key));
  }

  function keyRow(key) {
    const tr = el("tr", { attrs: { "data-key-id": key.id } });
    if (key.revoked) tr.className = "revoked";

    const name = el("td", { className: "key-name" });
    name.append(el("span", { text: key.name }));
    if (key.current) name.append(" ", el("span", { text: "this key", className: "badge" }));
    tr.append(name);

    const prefix = el("td");
    prefix.append(el("code", { text: key.prefix + "…", className: "key-prefix" }));
    tr.append(prefix, timeCell(key.created, "–"), timeCell(key.last_used, "never"));

    const status = el("td");
    status.append(el("span", {
      text: key.revoked ? "revoked" : "active",
      className: "status " + (key.revoked ? "status-revoked" : "status-active"),
    }));
    tr.append(status);

    const actions = el("td", { className: "actions" });
    if (!key.revoked) fillActions(actions, key);
    tr.append(actions);
    return tr;
  }

  function fillActions(cell, key) {
    const rotate = el("button", {
      text: "Rotate",
      className: "secondary",
      attrs: { type: "button", "aria-label": "Rotate key “" + key.name + "”" },
    });
    rotate.addEventListener("click", () => rotateKey(key));
    const revoke = el("button", {
      text: "Revoke",
      className: "danger",
      attrs: { type: "button", "aria-label": "Revoke key “" + key.name + "”" },
    });
    revoke.addEventListener("click", () => askRevoke(cell, key));
    cell.replaceChildren(rotate, revoke);
  }

  function askRevoke(cell, key) {
    const question = el("span", {
      text: key.current ? "Revoke the key you are signed in with?" : "Revoke this key?",
      className: "confirm-text",
    });
    const yes = el("button", {
      text: "Yes, revoke",
      className: "danger",
      attrs: { type: "button", "aria-label": "Yes, revoke key “" + key.name + "”" },
    });
    yes.addEventListener("click", () => revokeKey(key));
    const no = el("button", { text: "Cancel", className: "secondary", attrs: { type: "button" } });
    no.addEventListener("click", () => {
      fillActions(cell, key);
      cell.querySelector("button.danger").focus();
    });
    cell.replaceChildren(question, yes, no);
    no.focus();
  }

  // --- actions -------------------------------------------------------------------------

  async function refresh() {
    const end = new Date();
    const start = new Date(end.getTime() - (USAGE_DAYS - 1) * 86400 * 1000);
    const usagePath = "/v1/usage?start=" + isoDay(start) + "&end=" + isoDay(end);
    const [balance, keys, usage] = await Promise.all([
      api("GET", "/v1/credits"),
      api("GET", "/v1/keys"),
      api("GET", usagePath),
    ]);
    renderBalance(balance);
    renderKeys(keys.data);
    renderUsage(usage);
  }

  // What the page shows of the account goes when its key is forgotten.
  function clear() {
    hideSecret();
    $("keys-body").replaceChildren();
    $("usage-body").replaceChildren();
    for (const id of ["balance-balance", "balance-reserved", "balance-available",
      "balance-group", "usage-credits", "usage-tasks"]) {
      $(id).textContent = "–";
      delete $(id).dataset.value;
    }
    $("usage-range").textContent = "";
    $("create-name").value = "";
  }

  async function createKey(event) {
    event.preventDefault();
    clearAlert();
    const name = required("create-name", "Give the new key a name.");
    if (!name) return;
    await busy(async () => {
      try {
        const created = await api("POST", "/v1/keys", { body: { name } });
        $("create-name").value = "";
        showSecret(created.name, created.key);
        await refresh();
      } catch (err) {
        failed(err);
      }
    });
  }

  async function rotateKey(key) {
    clearAlert();
    await busy(async () => {
      try {
        const rotated = await api("POST", "/v1/keys/" + encodeURIComponent(key.id) + "/rotate");
        let note = "The old key stopped working.";
        if (key.current) {
          storeKey(rotated.key);
          note = "The old key stopped working; this page now uses the new key.";
        }
        showSecret(rotated.name, rotated.key, note);
        await refresh();
      } catch (err) {
        failed(err);
      }
    });
  }

  async function revokeKey(key) {
    clearAlert();
    await busy(async () => {
      try {
        await api("POST", "/v1/keys/" + encodeURIComponent(key.id) + "/revoke");
      } catch (err) {
        failed(err);
        return;
      }
      if (key.current) {
        session.signOut();
        showAlert("You revoked the key you were signed in with, so you have been signed out.");
        return;
      }
      try {
        await refresh();
      } catch (err) {
        failed(err);
      }
    });
  }

  // --- start ---------------------------------------------------------------------------

  function start() {
    $("create-form").addEventListener("submit", createKey);
    $("secret-copy").addEventListener("click", copySecret);
    $("secret-dismiss").addEventListener("click", hideSecret);
    $("balance-title").setAttribute("tabindex", "-1");
    return session.start();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
