// The modelport dashboard: hash-routed pages over the JSON API (/api/v1). No build step, no
// framework: ES modules, the DOM, text nodes only (never innerHTML with data).

import { api, ApiError, listAll, session, whenUnauthorized } from "./api.js";
import { metricsCharts } from "./charts.js";
import { curl, featuresOf, predictPath, predictionsOf, PROTOCOLS, requestBody, sampleRows } from "./examples.js";
import { uploadFiles } from "./upload.js";

const POLL_MS = 2000;
const METRICS_POLL_MS = 5000;
const WINDOWS = ["5m", "15m", "1h", "6h", "24h"];
const FINAL_VERSION = new Set(["READY", "REJECTED"]);

const main = document.getElementById("main");
const live = document.getElementById("live");

// ------------------------------------------------------------------ small DOM helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let fieldCount = 0;
/** A labelled control: returns [wrapper, control]. */
function field(labelText, control, hint) {
  const id = control.id || `f${++fieldCount}`;
  control.id = id;
  const parts = [h("label", { for: id }, labelText), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "muted" }, hint));
  }
  return [h("div", { class: "field" }, ...parts), control];
}

function errorBox() {
  return h("p", { class: "error", role: "alert" });
}

function showError(box, err) {
  box.textContent = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

function copyButton(getText, label) {
  const button = h("button", { type: "button", class: "secondary", "aria-label": label }, "Copy");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

export function announce(text) {
  live.textContent = text;
}

// ------------------------------------------------------------------ page lifecycle and polling

let page = 0; // bumped on every navigation: a stale page's timers and answers are dropped
const timers = new Set();

function stopPolling() {
  for (const t of timers) clearTimeout(t);
  timers.clear();
}

/** Run `task` now and every `ms` while this page is shown (never overlapping). */
function poll(task, ms = POLL_MS) {
  const mine = page;
  const run = async () => {
    if (mine !== page) return;
    try { await task(); } catch (err) { if (!(err instanceof ApiError && err.status === 401)) console.warn(err); }
    if (mine !== page) return;
    const t = setTimeout(() => { timers.delete(t); run(); }, ms);
    timers.add(t);
  };
  run();
}

function current(mine) { return mine === page; }

function render(title, ...children) {
  const heading = h("h1", { tabindex: "-1" }, title);
  main.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c === "H1" ? heading : c)));
  if (!main.contains(heading)) main.prepend(heading);
  document.title = `${title} · modelport`;
  heading.focus();
  return heading;
}

function notFound(what) {
  render("Not found", h("p", {}, `${what} does not exist, or is not yours.`),
    h("p", {}, h("a", { href: "#/models" }, "Back to your models")));
}

// keyed rows: a row is rebuilt only when its record changed, so focus inside the table survives polls
function syncRows(tbody, items, key, build, empty) {
  const seen = new Set();
  const existing = new Map([...tbody.children].filter((r) => r.dataset.key).map((r) => [r.dataset.key, r]));
  let previous = null;
  for (const item of items) {
    const k = String(key(item));
    const json = JSON.stringify(item);
    seen.add(k);
    let row = existing.get(k);
    if (!row || row.dataset.json !== json) {
      const fresh = build(item);
      fresh.dataset.key = k;
      fresh.dataset.json = json;
      if (row) {
        const hadFocus = row.contains(document.activeElement);
        row.replaceWith(fresh);
        if (hadFocus) (fresh.querySelector("button, a, input, select") || fresh).focus?.();
      }
      row = fresh;
    }
    if (previous ? previous.nextSibling !== row : tbody.firstChild !== row) {
      tbody.insertBefore(row, previous ? previous.nextSibling : tbody.firstChild);
    }
    previous = row;
  }
  for (const [k, row] of existing) if (!seen.has(k)) row.remove();
  for (const row of [...tbody.children]) if (!row.dataset.key) row.remove();
  if (!items.length) tbody.append(h("tr", {}, h("td", { colspan: 99, class: "muted" }, empty)));
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

// ------------------------------------------------------------------ sign in

function showSignedIn(owner) {
  document.getElementById("nav").hidden = !owner;
  document.getElementById("who").hidden = !owner;
  document.getElementById("who-name").textContent = owner ? `Signed in as ${owner}` : "";
}

let me = null;

function signInPage(message) {
  showSignedIn(null);
  const error = errorBox();
  if (message) error.textContent = message;
  const [keyField, key] = field("API key", h("input", {
    type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false",
  }), "printed by `modelport up` or `modelport users create NAME`; in AWS, your JWT. Kept in this tab only.");
  const form = h("form", { "aria-label": "Sign in" }, keyField, error, h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    session.signIn(key.value.trim());
    try {
      me = await api("GET", "/me", undefined, { quiet401: true });
    } catch (err) {
      session.signOut();
      showError(error, err);
      key.focus();
      return;
    }
    showSignedIn(me.owner);
    if (!location.hash || location.hash.startsWith("#/signin")) location.hash = "#/models";
    else route();
  });
  render("Sign in", h("section", { class: "panel" }, form));
}

function signOut(message) {
  session.signOut();
  me = null;
  stopPolling();
  page++;
  if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
  signInPage(message);
  announce(message || "Signed out");
}

whenUnauthorized((message) => signOut(`Signed out: ${message}`));
document.getElementById("sign-out").addEventListener("click", () => signOut());

// ------------------------------------------------------------------ models

async function modelsPage(mine) {
  const error = errorBox();
  const [nameField, name] = field("Name", h("input", {
    type: "text", name: "name", required: true, maxlength: 100, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*",
    autocomplete: "off",
  }), "letters, digits, . _ -");
  const [descField, description] = field("Description (optional)", h("input", { type: "text", name: "description", maxlength: 2000 }));
  const form = h("form", { class: "inline", "aria-label": "Create a model" }, nameField, descField,
    h("button", { type: "submit" }, "Create model"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const body = { name: name.value.trim() };
      if (description.value.trim()) body.description = description.value.trim();
      const model = await api("POST", "/models", body);
      announce(`Model ${model.name} created`);
      location.hash = `#/models/${model.id}`;
    } catch (err) { showError(error, err); }
  });
  const tbody = h("tbody");
  const listError = errorBox();
  render("Models",
    h("section", { class: "panel", "aria-labelledby": "create-h" }, h("h2", { id: "create-h" }, "Create a model"), form, error),
    h("section", { "aria-labelledby": "models-h" }, h("h2", { id: "models-h" }, "Your models"), listError,
      h("div", { class: "table-wrap" }, h("table", { class: "cards" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Description"), h("th", {}, "Created"))), tbody))));
  poll(async () => {
    try {
      const models = await listAll("/models");
      if (!current(mine)) return;
      listError.textContent = "";
      syncRows(tbody, models, (m) => m.id, (m) => h("tr", {},
        cell("Name", h("a", { href: `#/models/${m.id}` }, m.name)),
        cell("Description", m.description || ""), cell("Created", when(m.created_at))), "No models yet: create one above.");
    } catch (err) { if (current(mine)) showError(listError, err); throw err; }
  }, POLL_MS * 3);
}

function versionRow(version, onDeploy) {
  const artifact = version.model_artifact;
  const req = version.requirements_artifact;
  return h("tr", {},
    cell("Version", h("strong", {}, version.version), h("br"), h("small", { class: "muted" }, `id ${version.id}`)),
    cell("Status", statusBadge(version.status)),
    cell("Message", version.status_message || ""),
    cell("Model file", artifact ? h("span", {}, bytes(artifact.size), h("br"),
      h("span", { class: "hash", title: "sha256" }, `sha256 ${artifact.sha256}`)) : "–"),
    cell("Requirements", req ? h("span", {}, `requirements.txt, ${bytes(req.size)}`, h("br"),
      h("span", { class: "hash", title: "sha256" }, `sha256 ${req.sha256}`)) : h("span", { class: "muted" }, "none")),
    cell("Actions", version.status === "READY"
      ? h("button", { type: "button", onclick: () => onDeploy(version), "aria-label": `Deploy version ${version.version}` }, "Deploy")
      : ""),
  );
}

async function modelPage(mine, modelId) {
  let model;
  try {
    model = await api("GET", `/models/${modelId}`);
  } catch (err) {
    if (!current(mine)) return;
    if (err instanceof ApiError && err.status === 404) return notFound(`Model ${modelId}`);
    throw err;
  }
  if (!current(mine)) return;

  // --- upload a version: drag and drop or the file inputs, then the presigned POSTs
  const uploadError = errorBox();
  const uploadNote = h("p", { class: "note", role: "status", "aria-live": "polite" });
  const progress = h("progress", { max: 100, value: 0, hidden: true, "aria-label": "Upload progress" });
  const [modelFileField, modelFile] = field("Model file", h("input", { type: "file", name: "model_file",
    accept: ".joblib,.pkl,.pickle,.skops" }), "model.joblib (or .skops)");
  const [reqField, reqFile] = field("requirements.txt (optional)", h("input", { type: "file", name: "requirements_file",
    accept: ".txt,text/plain" }));
  const [labelField, label] = field("Version label (optional)", h("input", { type: "text", name: "version",
    maxlength: 64, autocomplete: "off" }), "default: the next number");
  const chosen = h("p", { class: "muted", id: "chosen-file" }, "No file chosen yet.");
  let dropped = null;
  const dropzone = h("div", { class: "dropzone", id: "dropzone" },
    h("p", {}, h("strong", {}, "Drop a model file here"), " (and requirements.txt with it), or choose it below."), chosen);
  const describe = () => {
    const m = dropped?.model || modelFile.files[0];
    const r = dropped?.requirements || reqFile.files[0];
    chosen.textContent = m ? `Ready to upload ${m.name} (${bytes(m.size)})${r ? ` with ${r.name}` : ""}.` : "No file chosen yet.";
  };
  modelFile.addEventListener("change", () => { dropped = null; describe(); });
  reqFile.addEventListener("change", describe);
  dropzone.addEventListener("dragover", (e) => { e.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    dropzone.classList.remove("over");
    const files = [...e.dataTransfer.files];
    const requirements = files.find((f) => f.name === "requirements.txt" || f.name.endsWith(".txt"));
    const modelDropped = files.find((f) => f !== requirements);
    dropped = { model: modelDropped || null, requirements: requirements || reqFile.files[0] || null };
    describe();
  });
  const uploadButton = h("button", { type: "submit" }, "Upload");
  const uploadForm = h("form", { "aria-label": "Upload a new version" }, dropzone, modelFileField, reqField, labelField,
    uploadButton, progress, uploadNote, uploadError);
  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    uploadError.textContent = "";
    const file = dropped?.model || modelFile.files[0];
    const requirements = dropped?.requirements || reqFile.files[0] || null;
    if (!file) { uploadError.textContent = "Choose or drop a model file first."; modelFile.focus(); return; }
    uploadButton.disabled = true;
    try {
      const body = label.value.trim() ? { version: label.value.trim() } : {};
      const version = await api("POST", `/models/${modelId}/versions`, body);
      refresh();
      const targets = await api("POST", `/versions/${version.id}/upload-url`, { requirements: Boolean(requirements) });
      progress.hidden = false;
      progress.value = 0;
      uploadNote.textContent = `Uploading ${file.name} to version ${version.version}…`;
      await uploadFiles(targets, file, requirements, (fraction) => { progress.value = Math.round(fraction * 100); });
      uploadNote.textContent = `Uploaded ${file.name}; checking version ${version.version}…`;
      watchVersion(version);
      uploadForm.reset();
      dropped = null;
      describe();
    } catch (err) {
      showError(uploadError, err);
    } finally {
      uploadButton.disabled = false;
    }
  });
  // the upload's own outcome, said once in the form's status line
  const watchVersion = (version) => {
    const start = Date.now();
    const step = async () => {
      if (!current(mine)) return;
      let now;
      try { now = await api("GET", `/versions/${version.id}`); } catch (err) { showError(uploadError, err); return; }
      if (!current(mine)) return;
      if (FINAL_VERSION.has(now.status)) {
        uploadNote.textContent = now.status === "READY"
          ? `Version ${now.version} is READY.`
          : `Version ${now.version} was REJECTED: ${now.status_message || "no reason recorded"}`;
        refresh();
        return;
      }
      if (Date.now() - start > 10 * 60 * 1000) { uploadNote.textContent = `Version ${now.version} is still ${now.status}.`; return; }
      const t = setTimeout(() => { timers.delete(t); step(); }, 1000);
      timers.add(t);
    };
    step();
  };

  // --- versions, polled
  const [replicasField, replicas] = field("Replicas for a new deployment", h("input", { type: "number", min: 1, value: 1, name: "replicas" }));
  const deployError = errorBox();
  const tbody = h("tbody");
  const listError = errorBox();
  const statuses = new Map();
  const onDeploy = async (version) => {
    deployError.textContent = "";
    try {
      const deployment = await api("POST", `/versions/${version.id}/deployments`, { replicas: Number(replicas.value || 1) });
      announce(`Deployment ${deployment.id} created`);
      location.hash = `#/deployments/${deployment.id}`;
    } catch (err) { showError(deployError, err); }
  };
  const refresh = async () => {
    try {
      const versions = await listAll(`/models/${modelId}/versions`);
      if (!current(mine)) return;
      listError.textContent = "";
      for (const v of versions) {
        const before = statuses.get(v.id);
        if (before && before !== v.status) {
          announce(`Version ${v.version}: ${v.status}${v.status_message ? `: ${v.status_message}` : ""}`);
        }
        statuses.set(v.id, v.status);
      }
      versions.sort((a, b) => b.id - a.id);
      syncRows(tbody, versions, (v) => v.id, (v) => versionRow(v, onDeploy), "No versions yet: upload a model file above.");
    } catch (err) {
      if (!current(mine)) return;
      if (err instanceof ApiError && err.status === 404) { notFound(`Model ${modelId}`); page++; return; }
      showError(listError, err);
      throw err;
    }
  };

  render(`Model ${model.name}`,
    h("p", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " › ", model.name), "H1",
    model.description ? h("p", {}, model.description) : null,
    h("section", { class: "panel", "aria-labelledby": "upload-h" }, h("h2", { id: "upload-h" }, "Upload a new version"), uploadForm),
    h("section", { "aria-labelledby": "versions-h" }, h("h2", { id: "versions-h" }, "Versions"),
      h("div", { class: "inline" }, replicasField), deployError, listError,
      h("div", { class: "table-wrap" }, h("table", { class: "cards", id: "versions" },
        h("thead", {}, h("tr", {}, ...["Version", "Status", "Message", "Model file", "Requirements", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        tbody))));
  poll(refresh);
}

// ------------------------------------------------------------------ deployments

function deploymentRow(d) {
  return h("tr", {},
    cell("Deployment", h("a", { href: `#/deployments/${d.id}` }, `Deployment ${d.id}`)),
    cell("Version", `version id ${d.version_id}`),
    cell("Status", statusBadge(d.status)),
    cell("Message", d.status_message || ""),
    cell("Replicas", String(d.replicas)),
    cell("URL", h("code", {}, d.url)));
}

async function deploymentsPage(mine) {
  const tbody = h("tbody");
  const listError = errorBox();
  const statuses = new Map();
  render("Deployments", listError,
    h("p", { class: "muted" }, "Deploy a READY version from its model's page."),
    h("div", { class: "table-wrap" }, h("table", { class: "cards", id: "deployments" },
      h("thead", {}, h("tr", {}, ...["Deployment", "Version", "Status", "Message", "Replicas", "URL"].map((t) => h("th", { scope: "col" }, t)))),
      tbody)));
  poll(async () => {
    try {
      const items = await listAll("/deployments");
      if (!current(mine)) return;
      listError.textContent = "";
      for (const d of items) {
        const before = statuses.get(d.id);
        if (before && before !== d.status) announce(`Deployment ${d.id}: ${d.status}${d.status_message ? `: ${d.status_message}` : ""}`);
        statuses.set(d.id, d.status);
      }
      syncRows(tbody, items, (d) => d.id, deploymentRow, "No deployments yet.");
    } catch (err) { if (current(mine)) showError(listError, err); throw err; }
  });
}

async function deploymentPage(mine, deploymentId) {
  let deployment;
  try {
    deployment = await api("GET", `/deployments/${deploymentId}`);
  } catch (err) {
    if (!current(mine)) return;
    if (err instanceof ApiError && err.status === 404) return notFound(`Deployment ${deploymentId}`);
    throw err;
  }
  if (!current(mine)) return;
  let version = null;
  try { version = await api("GET", `/versions/${deployment.version_id}`); } catch { /* shown as an id */ }
  if (!current(mine)) return;

  // --- facts, refreshed by polling
  const status = h("span", { id: "deployment-status", role: "status", "aria-live": "polite" });
  const replicasNow = h("span", { id: "deployment-replicas" });
  const versionNow = h("span", { id: "deployment-version" });
  const updated = h("span");
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Status"), h("dd", {}, status),
    h("dt", {}, "URL"), h("dd", {}, h("code", { id: "deployment-url" }, deployment.url), " ",
      copyButton(() => deployment.url, "Copy the URL")),
    h("dt", {}, "Version"), h("dd", {}, versionNow),
    h("dt", {}, "Replicas"), h("dd", {}, replicasNow),
    h("dt", {}, "Service"), h("dd", {}, h("code", {}, deployment.k8s_service_name)),
    h("dt", {}, "Updated"), h("dd", {}, updated));

  // --- scale
  const manageError = errorBox();
  const manageNote = h("p", { class: "note", role: "status" });
  const [scaleField, scaleInput] = field("Replicas", h("input", { type: "number", min: 0, value: deployment.replicas, name: "replicas" }));
  const scaleForm = h("form", { class: "inline", "aria-label": "Scale" }, scaleField, h("button", { type: "submit" }, "Scale"));
  scaleForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    manageError.textContent = "";
    try {
      deployment = await api("PATCH", `/deployments/${deploymentId}`, { replicas: Number(scaleInput.value) });
      manageNote.textContent = `Scaling to ${deployment.replicas} replicas…`;
      show(deployment);
    } catch (err) { showError(manageError, err); }
  });

  // --- move to another READY version of the same model
  const [moveField, moveSelect] = field("Version", h("select", { name: "version_id" }));
  const moveForm = h("form", { class: "inline", "aria-label": "Move to another version" }, moveField,
    h("button", { type: "submit" }, "Move to version"));
  const fillVersions = async () => {
    if (!version) return;
    const versions = (await listAll(`/models/${version.model_id}/versions`)).filter((v) => v.status === "READY");
    const chosen = moveSelect.value;
    moveSelect.replaceChildren(...versions.sort((a, b) => b.id - a.id).map((v) =>
      h("option", { value: v.id, selected: String(v.id) === (chosen || String(deployment.version_id)) },
        `${v.version} (id ${v.id})${v.id === deployment.version_id ? " — serving" : ""}`)));
  };
  moveForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    manageError.textContent = "";
    try {
      deployment = await api("PATCH", `/deployments/${deploymentId}`, { version_id: Number(moveSelect.value) });
      version = await api("GET", `/versions/${deployment.version_id}`);
      manageNote.textContent = `Moving to version ${version.version}…`;
      show(deployment);
      fillVersions();
    } catch (err) { showError(manageError, err); }
  });

  // --- token
  const tokenState = h("p", { id: "token-state" });
  const tokenShown = h("div", { class: "token", hidden: true, role: "region", "aria-label": "New token" });
  const protectButton = h("button", { type: "button" }, "Protect with a token");
  const removeButton = h("button", { type: "button", class: "secondary", hidden: true }, "Remove token");
  let isProtected = false;
  const showToken = (state) => {
    isProtected = state.protected;
    tokenState.textContent = state.protected
      ? "The prediction URL needs its token (Authorization: Bearer)."
      : "The prediction URL is open to anyone.";
    protectButton.textContent = state.protected ? "Rotate token" : "Protect with a token";
    removeButton.hidden = !state.protected;
    renderCurls();
  };
  protectButton.addEventListener("click", async () => {
    manageError.textContent = "";
    try {
      const issued = await api("POST", `/deployments/${deploymentId}/token`);
      showToken(issued);
      tokenShown.hidden = false;
      const code = h("code", { id: "token-value" }, issued.token);
      tokenShown.replaceChildren(h("p", {}, h("strong", {}, "Token, shown once: "), code, " ",
        copyButton(() => issued.token, "Copy the token")),
      h("p", { class: "muted" }, "Only its sha256 is stored; it cannot be shown again. It applies once the deployment is READY again."));
      tryToken.value = issued.token;
      code.focus?.();
    } catch (err) { showError(manageError, err); }
  });
  removeButton.addEventListener("click", async () => {
    manageError.textContent = "";
    try {
      showToken(await api("DELETE", `/deployments/${deploymentId}/token`));
      tokenShown.hidden = true;
      tokenShown.replaceChildren();
      tryToken.value = "";
    } catch (err) { showError(manageError, err); }
  });

  // --- delete, confirmed in place (no modal)
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete deployment");
  const confirmBox = h("div", { hidden: true, role: "group", "aria-label": "Confirm delete" },
    h("p", {}, `Delete deployment ${deploymentId}? Its URL stops serving.`));
  const confirmButton = h("button", { type: "button", class: "danger" }, "Yes, delete");
  const cancelButton = h("button", { type: "button", class: "secondary" }, "Cancel");
  confirmBox.append(confirmButton, " ", cancelButton);
  deleteButton.addEventListener("click", () => { confirmBox.hidden = false; confirmButton.focus(); });
  cancelButton.addEventListener("click", () => { confirmBox.hidden = true; deleteButton.focus(); });
  confirmButton.addEventListener("click", async () => {
    manageError.textContent = "";
    try {
      deployment = await api("DELETE", `/deployments/${deploymentId}`);
      confirmBox.hidden = true;
      manageNote.textContent = "Deleting…";
      show(deployment);
    } catch (err) { showError(manageError, err); }
  });

  // --- how to call it
  let metadata = null;
  const curls = h("div", { id: "curls" });
  const renderCurls = () => {
    const rows = sampleRows(featuresOf(metadata), 1);
    const name = (metadata && metadata.name) || "model";
    curls.replaceChildren(...PROTOCOLS.map((p) => {
      const text = curl(deployment.url, p.id, rows, { modelName: name, protected: isProtected });
      return h("div", {}, h("h3", {}, p.label), h("pre", {}, h("code", { "data-protocol": p.id }, text)),
        copyButton(() => text, `Copy the ${p.label} curl`));
    }));
  };

  // --- try it
  const modelFacts = h("p", { id: "model-facts", class: "muted" }, "Reading the model's metadata when it is READY…");
  const [protocolField, protocol] = field("Protocol", h("select", { name: "protocol" },
    ...PROTOCOLS.map((p) => h("option", { value: p.id }, p.label))));
  const [rowsField, rowsInput] = field("Rows (JSON: a list of rows, each a list of numbers)",
    h("textarea", { name: "rows", rows: 4, spellcheck: "false" }));
  const [tokenField, tryToken] = field("Token (only if the URL is protected)",
    h("input", { type: "password", name: "token", autocomplete: "off" }));
  const tryError = errorBox();
  const answer = h("pre", { id: "predict-answer", hidden: true });
  const predictions = h("p", { id: "predictions", role: "status", "aria-live": "polite" });
  const tryForm = h("form", { "aria-label": "Try a prediction" }, modelFacts, protocolField, rowsField, tokenField,
    h("button", { type: "submit" }, "Predict"), tryError, predictions, answer);
  rowsInput.value = JSON.stringify(sampleRows(null));
  let rowsTouched = false;
  rowsInput.addEventListener("input", () => { rowsTouched = true; });
  tryToken.addEventListener("change", () => { loadMetadata(); });
  const authHeaders = () => (tryToken.value.trim() ? { Authorization: `Bearer ${tryToken.value.trim()}` } : {});
  const loadMetadata = async () => {
    if (metadata || deployment.status !== "READY") return;
    try {
      const response = await fetch(`${deployment.url}/v2/models/model`, { headers: authHeaders(), cache: "no-store" });
      if (response.status === 401) {
        modelFacts.textContent = "The URL is protected: enter its token below to read the model's metadata.";
        return;
      }
      if (!response.ok) return;
      metadata = await response.json();
    } catch { return; }
    const features = featuresOf(metadata);
    const classes = metadata.parameters && metadata.parameters.classes;
    modelFacts.textContent = `${metadata.parameters?.model_type || "model"}: ${features ?? "any number of"} features per row` +
      (classes ? `, classes ${JSON.stringify(classes)}` : "");
    if (!rowsTouched) rowsInput.value = JSON.stringify(sampleRows(features));
    renderCurls();
  };
  tryForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    tryError.textContent = "";
    predictions.textContent = "";
    let rows;
    try {
      rows = JSON.parse(rowsInput.value);
      if (!Array.isArray(rows) || !rows.every(Array.isArray)) throw new Error("not a list of rows");
    } catch (err) {
      tryError.textContent = `The rows must be JSON, a list of lists of numbers, e.g. [[1, 2, 3, 4]] (${err.message})`;
      rowsInput.focus();
      return;
    }
    const name = (metadata && metadata.name) || "model";
    try {
      const response = await fetch(deployment.url + predictPath(protocol.value, name), {
        method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(requestBody(protocol.value, rows)),
      });
      const body = await response.json().catch(() => null);
      answer.hidden = false;
      answer.textContent = JSON.stringify(body, null, 2);
      if (!response.ok) {
        tryError.textContent = (body && (body.message || body.error)) || `the model server answered ${response.status}`;
        return;
      }
      predictions.textContent = `Predictions: ${JSON.stringify(predictionsOf(protocol.value, body))}`;
    } catch (err) {
      tryError.textContent = `The prediction URL could not be reached: ${err.message}`;
    }
  });

  // --- traffic charts (GET /deployments/{id}/metrics)
  const [windowField, windowSelect] = field("Window", h("select", { name: "window" },
    ...WINDOWS.map((w) => h("option", { value: w, selected: w === "1h" }, w))));
  const charts = h("div", { class: "charts", id: "charts" });
  const chartsSummary = h("p", { id: "traffic-summary", class: "muted" });
  const loadMetrics = async () => {
    let metrics;
    try {
      metrics = await api("GET", `/deployments/${deploymentId}/metrics?window=${windowSelect.value}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      metrics = { points: [] };
    }
    if (!current(mine)) return;
    const points = metrics.points || [];
    const total = points.reduce((n, p) => n + (p.requests || 0), 0);
    const errors = points.reduce((n, p) => n + (p.errors || 0), 0);
    if (!total) { // no samples, or only minutes without a request
      charts.replaceChildren(h("p", { class: "empty" }, "No traffic yet."));
      chartsSummary.textContent = "";
      return;
    }
    chartsSummary.textContent = `${total} requests, ${errors} errors in the last ${windowSelect.value}` +
      (metrics.sampled_at ? ` (sampled ${new Date(metrics.sampled_at).toLocaleTimeString()})` : "");
    charts.replaceChildren(...metricsCharts(metrics));
  };
  windowSelect.addEventListener("change", () => loadMetrics().catch(() => {}));

  // --- the rollout / shadow place
  // Reads out the record's `rollout` and `shadow` (domain/rollouts.py) and, while a shadow runs,
  // its report (GET /deployments/{id}/shadow); a running shadow can be stopped here. Starting a
  // canary or a shadow is the CLI's and the API's (README, "Canaries and shadows").
  const rolloutState = h("p", { id: "rollout-state" }, "No rollout in progress.");
  const shadowState = h("p", { id: "shadow-state" }, "No shadow.");
  const shadowError = errorBox();
  const stopShadowButton = h("button", { type: "button", class: "secondary", hidden: true }, "Stop shadow");
  const rolloutSlot = h("section", { class: "panel rollout-slot", id: "rollout", "aria-labelledby": "rollout-h" },
    h("h2", { id: "rollout-h" }, "Rollout and shadow"), rolloutState, shadowState, shadowError, stopShadowButton);
  const percentOf = (share) => (share === null || share === undefined ? "–" : `${(share * 100).toFixed(1)}%`);
  const renderShadow = async (d) => {
    const s = d.shadow;
    stopShadowButton.hidden = !(s && s.state === "running");
    if (!s) { shadowState.textContent = "No shadow."; return; }
    let text = s.state === "running"
      ? `Shadow: version id ${s.version_id} gets a copy of ${s.percent}% of requests.`
      : `Last shadow of version id ${s.version_id}: ${s.state}.${s.reason ? ` ${s.reason}` : ""}`;
    if (s.state === "running") {
      try {
        const report = await api("GET", `/deployments/${d.id}/shadow`);
        if (!current(mine)) return;
        text += ` ${report.mirrored} mirrored, ${report.dropped} dropped, ${report.candidate_errors} candidate ` +
          `errors; agreement ${percentOf(report.agreement)} of ${report.rows_compared} rows.`;
      } catch (err) { /* the record's state alone; the next refresh tries again */ }
    }
    shadowState.textContent = text;
  };
  stopShadowButton.addEventListener("click", async () => {
    shadowError.textContent = "";
    try {
      const d = await api("DELETE", `/deployments/${deploymentId}/shadow`);
      announce(`Deployment ${deploymentId}: shadow stopped`);
      show(d);
    } catch (err) { showError(shadowError, err); }
  });
  const renderRollout = (d) => {
    renderShadow(d);
    const r = d.rollout;
    if (!r) { rolloutState.textContent = "No rollout in progress."; return; }
    const steps = (r.steps || []).join(" → ");
    const text = r.state === "progressing"
      ? `Canary: version id ${r.candidate_version_id} gets ${r.weight}% of requests (step ${r.step + 1} of ` +
        `${(r.steps || []).length}: ${steps} %), version id ${r.stable_version_id} the rest.`
      : `Last rollout of version id ${r.candidate_version_id}: ${r.state.replace("_", " ")}.`;
    rolloutState.textContent = text + (r.reason ? ` ${r.reason}` : "");
  };

  let lastStatus = null;
  let gone = false;
  const show = (d) => {
    status.replaceChildren(statusBadge(d.status), d.status_message ? ` ${d.status_message}` : "");
    if (lastStatus && lastStatus !== d.status) {
      announce(`Deployment ${d.id}: ${d.status}${d.status_message ? `: ${d.status_message}` : ""}`);
      if (d.status === "READY") manageNote.textContent = "";
    }
    lastStatus = d.status;
    replicasNow.textContent = String(d.replicas);
    versionNow.replaceChildren(version
      ? h("a", { href: `#/models/${version.model_id}` }, `${version.version} (id ${version.id})`)
      : `id ${d.version_id}`);
    updated.replaceChildren(when(d.updated_at));
    renderRollout(d);
  };

  render(`Deployment ${deploymentId}`,
    h("p", { class: "crumbs" }, h("a", { href: "#/deployments" }, "Deployments"), " › ", `Deployment ${deploymentId}`), "H1",
    facts,
    h("section", { class: "panel", "aria-labelledby": "manage-h" }, h("h2", { id: "manage-h" }, "Manage"),
      manageNote, manageError,
      h("h3", {}, "Scale"), scaleForm,
      h("h3", {}, "Move to another version"), moveForm,
      h("h3", {}, "Token"), tokenState, h("div", { class: "inline" }, protectButton, " ", removeButton), tokenShown,
      h("h3", {}, "Delete"), deleteButton, confirmBox),
    rolloutSlot,
    h("section", { "aria-labelledby": "call-h" }, h("h2", { id: "call-h" }, "Call it"), curls),
    h("section", { class: "panel", "aria-labelledby": "try-h" }, h("h2", { id: "try-h" }, "Try it"), tryForm),
    h("section", { "aria-labelledby": "traffic-h" }, h("h2", { id: "traffic-h" }, "Traffic"),
      h("div", { class: "inline" }, windowField), chartsSummary, charts));
  show(deployment);
  renderCurls();
  fillVersions().catch((err) => showError(manageError, err));
  try { showToken(await api("GET", `/deployments/${deploymentId}/token`)); } catch { /* shown when it answers */ }

  poll(async () => {
    if (gone) return;
    try {
      deployment = await api("GET", `/deployments/${deploymentId}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && current(mine)) {
        gone = true;
        status.replaceChildren(statusBadge("DELETED"), " the deployment is gone");
        manageNote.textContent = `Deployment ${deploymentId} was deleted.`;
        announce(`Deployment ${deploymentId} was deleted`);
        for (const b of main.querySelectorAll("form button, section.panel button")) b.disabled = true;
        return;
      }
      throw err;
    }
    if (!current(mine)) return;
    if (deployment.version_id !== version?.id) {
      try { version = await api("GET", `/versions/${deployment.version_id}`); } catch { /* keep the id */ }
    }
    show(deployment);
    await loadMetadata();
  });
  poll(() => (gone ? null : loadMetrics()), METRICS_POLL_MS);
}

// ------------------------------------------------------------------ routing

const ROUTES = [
  [/^#?\/?$/, () => { location.replace("#/models"); return null; }],
  [/^#\/models$/, (mine) => modelsPage(mine)],
  [/^#\/models\/(\d+)$/, (mine, id) => modelPage(mine, Number(id))],
  [/^#\/deployments$/, (mine) => deploymentsPage(mine)],
  [/^#\/deployments\/(\d+)$/, (mine, id) => deploymentPage(mine, Number(id))],
];

async function route() {
  stopPolling();
  const mine = ++page;
  const hash = location.hash || "#/";
  if (!session.key || hash.startsWith("#/signin")) {
    if (session.key && hash.startsWith("#/signin")) { location.replace("#/models"); return; }
    signInPage();
    return;
  }
  if (!me) {
    try {
      me = await api("GET", "/me");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) signInPage(err.message);
      return;
    }
    if (!current(mine)) return;
  }
  showSignedIn(me.owner);
  const section = hash.split("/")[1] || "models";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, handler] of ROUTES) {
    const match = pattern.exec(hash);
    if (match) {
      try {
        await handler(mine, ...match.slice(1));
      } catch (err) {
        if (current(mine) && !(err instanceof ApiError && err.status === 401)) {
          render("Something went wrong", h("p", { class: "error", role: "alert" }, err.message));
        }
      }
      return;
    }
  }
  notFound(`The page ${hash}`);
}

window.addEventListener("hashchange", route);
route();
