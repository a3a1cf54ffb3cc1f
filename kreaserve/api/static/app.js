// What the web pages share: the API key, calls to the API with it, the alert, and signing
// in and out. No framework, no third-party code, no inline script; text from the API goes
// through textContent only. The signed-in key lives in sessionStorage only (this tab, shared
// by the pages): never localStorage, a cookie or the URL. Each page's own script
// (account.js, playground.js) runs after this one and uses window.kreaserve.
"use strict";

window.kreaserve = (function () {
  const STORAGE_KEY = "kreaserve.apiKey";
  const INVALID_KEY = "That key is not valid or has been revoked.";

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- the key -------------------------------------------------------------------------

  function storedKey() {
    try {
      return window.sessionStorage.getItem(STORAGE_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeKey(key) {
    window.sessionStorage.setItem(STORAGE_KEY, key);
  }

  function forgetKey() {
    try {
      window.sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      /* storage unavailable: nothing to forget */
    }
  }

  // --- the API -------------------------------------------------------------------------

  function request(method, path, { body, key, headers = {} } = {}) {
    const secret = key || storedKey();
    const all = { Accept: "application/json", ...headers };
    if (secret) all.Authorization = "Bearer " + secret;
    if (body !== undefined) all["Content-Type"] = "application/json";
    return fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    }).catch(() => {
      throw new ApiError(0, "Could not reach the server. Check your connection and try again.",
        "network_error");
    });
  }

  async function payloadOf(response) {
    try {
      return await response.json();
    } catch (_) {
      return null;
    }
  }

  async function errorOf(response) {
    const payload = await payloadOf(response);
    const error = payload && payload.error ? payload.error : {};
    const message = typeof error.message === "string" && error.message
      ? error.message
      : "The server answered " + response.status + ".";
    return new ApiError(response.status, message, error.code || "http_" + response.status);
  }

  // The JSON of a 2xx answer (null when it has none); an ApiError for any other.
  async function api(method, path, options) {
    const response = await request(method, path, options);
    if (!response.ok) throw await errorOf(response);
    return payloadOf(response);
  }

  // --- the alert -----------------------------------------------------------------------

  function showAlert(message) {
    $("alert-text").textContent = message;
    $("alert").hidden = false;
  }

  function clearAlert() {
    $("alert-text").textContent = "";
    $("alert").hidden = true;
  }

  // The trimmed value of a form field that must not be empty; when it is, says `message`
  // in the alert, moves the focus there and returns null.
  function required(id, message) {
    const input = $(id);
    const value = input.value.trim();
    if (value) return value;
    showAlert(message);
    input.focus();
    return null;
  }

  // --- signing in and out --------------------------------------------------------------

  // A page's sign-in: the form #sign-in-form with #sign-in-key, the sections #signed-out
  // and #signed-in, the #sign-out button. The page says how it shows it is busy
  // (`busy(work)`), loads itself once signed in (`load()`), what it does after a sign-in
  // (`signedIn()`), reports an error of a signed-in action (`failed(err)`) and clears
  // itself on sign-out (`clear()`). Returns {signOut, start}.
  function signing({ busy, load, signedIn = () => {}, failed, clear = () => {} }) {
    function showSignedIn() {
      $("signed-out").hidden = true;
      $("signed-in").hidden = false;
      $("sign-out").hidden = false;
    }

    function signOut() {
      forgetKey();
      $("signed-in").hidden = true;
      $("sign-out").hidden = true;
      $("signed-out").hidden = false;
      $("sign-in-key").value = "";
      clear();
    }

    // The key is kept only once the API has accepted it.
    async function signIn(event) {
      event.preventDefault();
      clearAlert();
      const key = required("sign-in-key", "Paste an API key to sign in.");
      if (!key) return;
      const input = $("sign-in-key");
      await busy(async () => {
        try {
          await api("GET", "/v1/credits", { key });
        } catch (err) {
          showAlert(err instanceof ApiError && err.status === 401 ? INVALID_KEY : err.message);
          input.select();
          return;
        }
        storeKey(key);
        input.value = "";
        showSignedIn();
        try {
          await load();
          signedIn();
        } catch (err) {
          failed(err);
        }
      });
    }

    // Wires the form and the buttons; a tab that holds a key already is shown signed in.
    async function start() {
      $("sign-in-form").addEventListener("submit", signIn);
      $("alert-dismiss").addEventListener("click", clearAlert);
      $("sign-out").addEventListener("click", () => {
        clearAlert();
        signOut();
        $("sign-in-key").focus();
      });
      if (storedKey()) {
        showSignedIn();
        await busy(async () => {
          try {
            await load();
          } catch (err) {
            failed(err);
          }
        });
      }
      document.body.dataset.ready = "true";
    }

    return { signOut, start };
  }

  return { $, ApiError, INVALID_KEY, storeKey, request, errorOf, api, showAlert, clearAlert,
    required, signing };
})();
