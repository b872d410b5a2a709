// The page: pick or drop photos, show each with its classes (and Grad-CAM, "unknown"), and a
// model tab. Plain JavaScript against the server's own REST API; no framework, no CDN.
"use strict";

const state = { name: null, explain: false, apiKey: new URLSearchParams(location.search).get("key") };
const $ = (id) => document.getElementById(id);

function headers() { return state.apiKey ? { "X-API-Key": state.apiKey } : {}; }

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function start() {
  const name = document.querySelector('meta[name="model"]')?.content || "catsdogs";
  try {
    const meta = await getJSON(`/v1/models/${name}/metadata`);
    state.name = name;
    state.explain = meta.explain;
    $("model-name").textContent = `${meta.class_names.join(" / ")}, ${meta.image_size.join("×")}`;
    if (!meta.explain) { $("explain").checked = false; $("explain").disabled = true; }
  } catch (error) {
    $("status").textContent = `Cannot reach the model: ${error.message}`;
  }
}

function card(file, result) {
  const item = document.createElement("li");
  item.className = "card" + (result.unknown ? " unknown" : "");
  const images = document.createElement("div");
  images.className = "images";
  const photo = document.createElement("img");
  photo.src = URL.createObjectURL(file);
  photo.alt = `uploaded photo ${file.name}`;
  images.append(photo);
  if (result.gradcam_png) {
    const heat = document.createElement("img");
    heat.src = `data:image/png;base64,${result.gradcam_png}`;
    heat.alt = `where the model saw ${result.classes[0].class} (Grad-CAM)`;
    images.append(heat);
  }
  const title = document.createElement("h2");
  title.className = "prediction";
  title.textContent = result.class_name;
  const top = document.createElement("p");
  top.className = "probability";
  top.textContent = `${(result.classes[0].probability * 100).toFixed(1)} %`;
  const name = document.createElement("p");
  name.className = "file";
  name.textContent = file.name;
  item.append(images, title, top, name);
  for (const c of result.classes.slice(0, 5)) {
    const row = document.createElement("div");
    row.className = "bar";
    const label = document.createElement("span");
    label.textContent = c.class;
    const meter = document.createElement("meter");
    meter.min = 0; meter.max = 1; meter.value = c.probability;
    meter.setAttribute("aria-label", `${c.class} probability`);
    const value = document.createElement("span");
    value.textContent = `${(c.probability * 100).toFixed(1)}%`;
    row.append(label, meter, value);
    item.append(row);
  }
  return item;
}

async function classify(files) {
  if (!files.length || !state.name) return;
  $("status").textContent = `Classifying ${files.length} photo(s)…`;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const explain = $("explain").checked && state.explain ? "?explain=1" : "";
  try {
    const response = await fetch(`/v1/models/${state.name}:classify${explain}`,
                                 { method: "POST", body: form, headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    body.results.forEach((result, i) => $("results").prepend(card(files[i], result)));
    $("status").textContent = `Classified ${files.length} photo(s).`;
  } catch (error) {
    $("status").innerHTML = "";
    const message = document.createElement("span");
    message.className = "error";
    message.textContent = `Error: ${error.message}`;
    $("status").append(message);
  }
}

async function showModel() {
  const report = await getJSON(`/v1/models/${state.name}/report`);
  const list = $("metrics");
  list.innerHTML = "";
  const shown = { ...report.metrics, temperature: report.calibration.temperature };
  for (const [key, value] of Object.entries(shown)) {
    if (value === undefined || value === null || typeof value === "object") continue;
    const term = document.createElement("dt");
    term.textContent = key.replaceAll("_", " ");
    const detail = document.createElement("dd");
    detail.textContent = typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : value;
    list.append(term, detail);
  }
  $("plots").innerHTML = "";
  for (const plot of report.plots) {
    const image = document.createElement("img");
    image.alt = plot.replace(".png", "").replaceAll("_", " ");
    const response = await fetch(`/v1/models/${state.name}/plots/${plot}`, { headers: headers() });
    image.src = URL.createObjectURL(await response.blob());
    $("plots").append(image);
  }
}

function select(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const on = other === tab;
    other.setAttribute("aria-selected", on);
    other.tabIndex = on ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
  if (tab.id === "tab-model") showModel().catch((e) => { $("metrics").textContent = e.message; });
}

document.querySelectorAll('[role="tab"]').forEach((tab, index, tabs) => {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {  // arrow keys move between tabs
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) select(tabs[(index + step + tabs.length) % tabs.length]);
  });
});
$("files").addEventListener("change", (event) => { classify([...event.target.files]); event.target.value = ""; });
const drop = $("drop");
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("files").click(); } });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); classify([...event.dataTransfer.files]); });
start();
