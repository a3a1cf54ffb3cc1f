// The playground, over app.js (the key, the API, the alert, signing in): type a prompt,
// watch the task live, see the image, browse recent tasks. Text from the API goes through
// textContent only. EventSource cannot send an Authorization header, so the events stream
// is read with fetch() and a ReadableStream, resumed with Last-Event-ID when it breaks.
"use strict";

(function () {
  const { $, ApiError, INVALID_KEY, request, errorOf, api, showAlert, clearAlert, required } =
    window.kreaserve;
  const RECENT = 10;
  const RETRIES = 3;
  const session = window.kreaserve.signing({ busy, load: refreshRecent, failed });

  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      session.signOut();
      showAlert(INVALID_KEY);
      return;
    }
    showAlert(err instanceof ApiError ? err.message : "Something went wrong: " + err);
  }

  function setBusy(busy) {
    document.body.setAttribute("aria-busy", busy ? "true" : "false");
    $("generate-submit").disabled = busy;
    $("sign-in-submit").disabled = busy;
  }

  async function busy(work) {
    setBusy(true);
    try {
      return await work();
    } finally {
      setBusy(false);
    }
  }

  // --- the events stream -----------------------------------------------------------------

  // Yields {id, event, data} for each event of an SSE body (comments and pings skipped).
  async function* sseEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let fields = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (fields.data !== undefined) yield fields;
          fields = {};
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data = fields.data === undefined ? text : fields.data + "\n" + text;
        else if (name === "id" || name === "event") fields[name] = text;
      }
    }
  }

  // Follows a task to its end through its events, calling show() with each; returns the
  // ended task object. Falls back to polling when the stream is unavailable.
  async function follow(taskId, show) {
    const path = "/v1/tasks/" + encodeURIComponent(taskId);
    let lastId = null;
    let failures = 0;
    while (failures <= RETRIES) {
      const headers = { Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      let response;
      try {
        response = await request("GET", path + "/events", { headers });
      } catch (_) {
        failures += 1;
        continue;
      }
      if (response.status === 204) break;
      if (response.status === 404 || response.status === 405) {
        const err = await errorOf(response);
        if (err.code === "task_not_found") throw err;
        break;
      }
      if (!response.ok) throw await errorOf(response);
      try {
        for await (const event of sseEvents(response)) {
          failures = 0;
          if (event.id) lastId = event.id;
          const data = JSON.parse(event.data);
          if (event.event === "task") return data;
          show(event.event, data);
        }
      } catch (_) {
        /* the stream broke: resume it */
      }
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, 500 * failures));
    }
    for (;;) {
      const task = await api("GET", path);
      if (["completed", "failed", "cancelled"].includes(task.status)) return task;
      show("progress", { status: task.status, progress: task.progress, phase: null });
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  // --- generating ----------------------------------------------------------------------

  function showProgress(kind, data) {
    let text;
    if (kind === "queued") {
      text = data.position === 1 ? "Queued: next in line" : "Queued: " + data.position + " in line";
    } else {
      text = "Processing: " + (data.phase || data.status);
    }
    $("run-status").textContent = text;
    $("run-progress").value = data.progress || 0;
    document.body.dataset.phase = data.phase || data.status;
  }

  function showEnded(task) {
    $("run-progress").value = task.progress;
    if (task.status === "completed" && task.results && task.results.length) {
      $("run-status").textContent = "Completed";
      $("result-image").src = task.results[0];
      $("result-link").href = task.results[0];
      $("result").hidden = false;
    } else {
      const error = task.error || {};
      $("run-status").textContent = "The task " + task.status + ".";
      showAlert("The task " + task.status + ": " + (error.message || error.code || "no image."));
    }
  }

  async function generate(event) {
    event.preventDefault();
    clearAlert();
    const prompt = required("prompt", "Type a prompt first.");
    if (!prompt) return;
    const body = {
      model: "krea-2-turbo",
      prompt,
      size: $("size").value,
      quality: $("quality").value,
      output_format: $("output-format").value,
    };
    if ($("seed").value) body.seed = Number($("seed").value);
    setBusy(true);
    try {
      const task = await api("POST", "/v1/images/generations", { body });
      $("run").hidden = false;
      $("result").hidden = true;
      $("run-task").textContent = task.id;
      showProgress("queued", { position: 1, status: task.status, progress: 0 });
      document.body.dataset.task = task.id;
      const ended = await follow(task.id, showProgress);
      showEnded(ended);
      document.body.dataset.ended = ended.status;
      await refreshRecent();
    } catch (err) {
      failed(err);
    } finally {
      setBusy(false);
    }
  }

  // --- recent tasks --------------------------------------------------------------------

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  async function refreshRecent() {
    const page = await api("GET", "/v1/tasks?limit=" + RECENT);
    const body = $("recent-body");
    body.replaceChildren();
    for (const task of page.data) {
      const row = document.createElement("tr");
      cell(row, new Date(task.created * 1000).toISOString().slice(0, 19).replace("T", " "));
      cell(row, task.id);
      cell(row, task.status);
      cell(row, task.seed === undefined ? "" : String(task.seed));
      const image = cell(row, "");
      if (task.results && task.results.length) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "link";
        button.textContent = "Show";
        button.addEventListener("click", () => {
          $("run").hidden = false;
          $("run-task").textContent = task.id;
          showEnded(task);
        });
        image.appendChild(button);
      }
      body.appendChild(row);
    }
    $("recent-empty").hidden = page.data.length > 0;
  }

  function start() {
    $("generate-form").addEventListener("submit", generate);
    setBusy(false);
    return session.start();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
