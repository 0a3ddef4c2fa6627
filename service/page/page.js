// The planners' page: calls the service's own routes, draws with uPlot. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { overview: null, answer: null };
const DAY = 86400;
const AXES = [{}, { size: 70 }]; // room for the units' labels

async function call(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

function cell(row, text, className) {
  const td = document.createElement(row.parentElement && row.parentElement.tagName === "THEAD" ? "th" : "td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fillTable(table, header, rows) {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  header.forEach((name) => cell(head, name));
  const body = table.createTBody();
  rows.forEach((values) => {
    const row = body.insertRow();
    values.forEach((value) => {
      if (value instanceof Node) row.insertCell().appendChild(value);
      else cell(row, value === null || value === undefined ? "" : String(value));
    });
  });
}

const number = (value, digits = 1) =>
  value === null || value === undefined ? "" : Number(value).toLocaleString("en", { maximumFractionDigits: digits });
const percent = (share) => (share === null || share === undefined ? "" : `${(100 * share).toFixed(1)}%`);
const seconds = (isoDate) => Date.parse(`${isoDate}T00:00:00Z`) / 1000;
const isoDate = (time) => new Date(time * 1000).toISOString().slice(0, 10);

function show(view) {
  document.querySelectorAll(".view").forEach((section) => (section.hidden = section.id !== view));
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  if (view === "accuracy") loadAccuracy();
  if (view === "registry") loadRegistry();
}

function message(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

// ---- the plan ----

function planTable() {
  const weeks = Math.max(1, Math.min(52, Number($("weeks").value) || 1));
  const known = state.overview.known;
  const old = readPlanTable();
  const table = $("plan-table");
  fillTable(
    table,
    ["week", ...known],
    Array.from({ length: weeks }, (_, h) => [
      String(h + 1),
      ...known.map((name) => {
        const input = document.createElement("input");
        input.type = "number";
        input.step = "any";
        input.name = name;
        input.value = old[h] && old[h][name] !== undefined ? old[h][name] : 0;
        return input;
      }),
    ]),
  );
}

function readPlanTable() {
  return Array.from($("plan-table").querySelectorAll("tbody tr")).map((row) =>
    Object.fromEntries(Array.from(row.querySelectorAll("input")).map((input) => [input.name, Number(input.value)])),
  );
}

function staticInputs() {
  const box = $("static-inputs");
  box.replaceChildren();
  Object.entries(state.overview.static).forEach(([name, values]) => {
    const label = document.createElement("label");
    label.textContent = name;
    const input = document.createElement("input");
    input.id = `static-${name}`;
    input.placeholder = values.length ? values.join(", ") : "stored";
    label.appendChild(input);
    box.appendChild(label);
  });
}

function planBody() {
  const id = $("series").value.trim();
  const item = { id, weeks: readPlanTable() };
  if ($("prev").value !== "") item.prev_week_sales = Number($("prev").value);
  if ($("start").value) item[state.overview.three_inputs ? "start" : state.overview.week_column] = $("start").value;
  Object.entries(state.overview.static).forEach(([name, values]) => {
    const value = $(`static-${name}`).value.trim();
    if (value) item[name] = values.length ? value : Number(value);
  });
  const levels = $("levels").value.split(",").map((v) => v.trim()).filter(Boolean).map(Number);
  return { series: [item], levels };
}

async function forecast() {
  message("message", "");
  $("unknown").hidden = true;
  const id = $("series").value.trim();
  if (!id) return message("message", "Pick a series first.");
  try {
    const [answer, history] = await Promise.all([
      call("/forecast", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(planBody()) }),
      call(`/ui/data/history?series=${encodeURIComponent(id)}`),
    ]);
    state.answer = answer;
    if (answer.unknown_series && answer.unknown_series.length) {
      $("unknown").textContent = `Series ${answer.unknown_series.join(", ")} is not known to model ${answer.model_version}: forecast as a typical series.`;
      $("unknown").hidden = false;
    }
    drawPlan(answer, history);
    $("download").disabled = false;
  } catch (error) {
    message("message", error.message);
  }
}

function planWeeks(answer, history) {
  const weeks = answer.series[0].weeks;
  if (weeks[0].week) return weeks.map((w) => seconds(w.week));
  const first = $("start").value
    ? seconds($("start").value)
    : history.weeks.length
      ? seconds(history.weeks[history.weeks.length - 1]) + 7 * DAY
      : null;
  return first === null ? null : weeks.map((_, h) => first + 7 * DAY * h);
}

function drawPlan(answer, history) {
  const weeks = answer.series[0].weeks;
  const levels = answer.levels.map(String);
  const times = planWeeks(answer, history);
  const rows = weeks.map((w, h) => [
    w.step,
    w.week || (times ? isoDate(times[h]) : ""),
    valueCell(w.units_sold, "units"),
    ...levels.flatMap((level) => (w.intervals && w.intervals[level] ? w.intervals[level].map((v) => number(v)) : ["", ""])),
    (w.extrapolated || []).join(", "),
    (w.filled || []).join(", "),
  ]);
  fillTable($("answer-table"), ["step", "week", "units sold", ...levels.flatMap((l) => [`low ${l}`, `high ${l}`]), "outside training", "filled"], rows);
  const chart = $("plan-chart");
  chart.replaceChildren();
  if (!times) return;
  const past = history.weeks.map(seconds);
  const x = [...past, ...times];
  const blank = (n) => Array(n).fill(null);
  const data = [x, [...history.units_sold, ...blank(times.length)], [...blank(past.length), ...weeks.map((w) => w.units_sold)]];
  const series = [{}, { label: "sold", stroke: "#1d2330" }, { label: "forecast", stroke: "#2f6fde", width: 2 }];
  const bands = [];
  levels.forEach((level, i) => {
    const bounds = weeks.map((w) => (w.intervals && w.intervals[level]) || [null, null]);
    data.push([...blank(past.length), ...bounds.map((b) => b[1])], [...blank(past.length), ...bounds.map((b) => b[0])]);
    series.push({ label: `high ${level}`, stroke: "#9db8ec" }, { label: `low ${level}`, stroke: "#9db8ec" });
    bands.push({ series: [series.length - 2, series.length - 1], fill: `rgba(47, 111, 222, ${0.18 - 0.06 * i})` });
  });
  new uPlot({ width: Math.min(1100, chart.clientWidth || 900), height: 320, series, bands, axes: AXES }, data, chart);
}

function valueCell(value, className) {
  const span = document.createElement("span");
  span.className = className;
  span.dataset.value = String(value);
  span.textContent = number(value);
  return span;
}

function download() {
  const answer = state.answer;
  const levels = answer.levels.map(String);
  // Every cell quoted, and text that a spreadsheet would run as a formula kept as text.
  const quoted = (cell) => `"${String(cell).replace(/^([=+\-@])/, "'$1").replace(/"/g, '""')}"`;
  const row = (cells) => cells.map((cell) => (typeof cell === "number" ? String(cell) : quoted(cell))).join(",");
  const lines = [row(["series", "step", "week", "units_sold", ...levels.flatMap((l) => [`low_${l}`, `high_${l}`])])];
  answer.series.forEach((s) =>
    s.weeks.forEach((w) =>
      lines.push(row([s.id, w.step, w.week || "", w.units_sold, ...levels.flatMap((l) => (w.intervals && w.intervals[l]) || ["", ""])])),
    ),
  );
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.download = `forecast-${answer.series[0].id}.csv`;
  link.click();
}

function csvCells(line) {
  // One CSV record's cells: quoted cells may hold commas, and "" is a quote.
  const cells = [];
  let cell = "", quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted && c === '"' && line[i + 1] === '"') (cell += '"'), i++;
    else if (c === '"') quoted = !quoted;
    else if (c === "," && !quoted) cells.push(cell.trim()), (cell = "");
    else cell += c;
  }
  return [...cells, cell.trim()];
}

async function uploadPlan(file) {
  const [header, ...lines] = (await file.text()).trim().split(/\r?\n/).map(csvCells);
  const column = (name) => header.indexOf(name);
  const idColumn = [column(state.overview.series_column), column("series"), column("id")].find((i) => i >= 0);
  const chosen = $("series").value.trim() || (idColumn !== undefined && lines.length ? lines[0][idColumn] : "");
  const rows = lines.filter((line) => idColumn === undefined || line[idColumn] === chosen);
  const missing = state.overview.known.filter((name) => column(name) < 0);
  if (missing.length) return message("message", `${file.name}: no column ${missing.join(", ")}`);
  if (!rows.length) return message("message", `${file.name}: no week of series ${chosen || "(none)"}`);
  const blank = rows.findIndex((line) => state.overview.known.some((name) => (line[column(name)] || "") === ""));
  if (blank >= 0) return message("message", `${file.name}: week ${blank + 1} of ${chosen} has an empty cell`);
  $("series").value = chosen;
  $("weeks").value = rows.length;
  const weekColumn = column(state.overview.week_column) >= 0 ? column(state.overview.week_column) : column("week");
  if (weekColumn >= 0 && rows.length) $("start").value = rows[0][weekColumn];
  $("plan-table").replaceChildren();
  planTable();
  $("plan-table").querySelectorAll("tbody tr").forEach((row, h) =>
    row.querySelectorAll("input").forEach((input) => (input.value = rows[h][column(input.name)])),
  );
  message("message", "");
}

// ---- how the champion is doing ----

async function loadAccuracy() {
  message("accuracy-message", "");
  try {
    const answer = await call(`/accuracy?weeks=${Number($("window").value) || 13}`);
    const box = $("accuracy-tables");
    box.replaceChildren();
    const versions = Object.keys(answer.versions);
    if (!versions.length) message("accuracy-message", "No served forecast has an actual yet: post what sold to /actuals.");
    versions.forEach((version) => {
      const title = document.createElement("h2");
      title.textContent = `Model ${version}`;
      if (version === answer.champion) title.insertAdjacentHTML("beforeend", ' <span class="mark">champion</span>');
      if (version === answer.shadow) title.insertAdjacentHTML("beforeend", ' <span class="mark">shadow</span>');
      const table = document.createElement("table");
      const levels = [...new Set(answer.versions[version].all.flatMap((s) => Object.keys(s.coverage)))];
      const rows = ["window", "all"].flatMap((span) =>
        answer.versions[version][span].map((s) => [
          span === "window" ? `last ${answer.weeks} weeks` : "since promotion",
          s.step, s.count, percent(s.wape), percent(s.bias), number(s.mase, 2),
          ...levels.map((level) => percent(s.coverage[level])),
        ]),
      );
      fillTable(table, ["over", "step", "weeks", "WAPE", "bias", "MASE", ...levels.map((l) => `inside ${l}`)], rows);
      box.append(title, table);
    });
    drawWeekly(await call(`/ui/data/weekly?weeks=${answer.weeks}`));
    const sold = (answer.drift && answer.drift.inputs) || {};
    const served = (answer.drift && answer.drift.served && answer.drift.served.inputs) || {};
    const flagged = (d) => {
      const flag = document.createElement("span");
      flag.className = d && d.flagged ? "flag" : "";
      flag.textContent = d ? (d.flagged ? "drifted" : "ok") : "";
      return flag;
    };
    const names = [...new Set([...Object.keys(sold), ...Object.keys(served)])];
    fillTable($("drift-table"), ["input", "PSI of what sold", "weeks", "", "PSI as served", "rows", ""], names.map((name) => {
      const a = sold[name], b = served[name];
      return [name, a ? number(a.psi, 3) : "", a ? a.count : "", flagged(a), b ? number(b.psi, 3) : "", b ? b.count : "", flagged(b)];
    }));
  } catch (error) {
    message("accuracy-message", error.message);
  }
}

function drawWeekly(weekly) {
  const chart = $("weekly-chart");
  chart.replaceChildren();
  const versions = Object.keys(weekly.versions);
  if (!versions.length) return;
  const colors = ["#2f6fde", "#d9822b", "#2b9d5b", "#8e44ad"];
  const series = [{}];
  const data = [weekly.weeks.map(seconds)];
  versions.forEach((v, i) => {
    const figures = weekly.versions[v];
    series.push({ label: `${v} WAPE`, stroke: colors[i % colors.length], width: 2, value: (_, x) => percent(x), scale: "%" });
    data.push(figures.wape);
    Object.entries(figures.coverage).forEach(([level, shares]) => {
      series.push({ label: `${v} inside ${level}`, stroke: colors[i % colors.length], dash: [4, 4], value: (_, x) => percent(x), scale: "%" });
      data.push(shares);
    });
  });
  const axes = [{}, { scale: "%", size: 60, values: (_, ticks) => ticks.map((t) => `${Math.round(100 * t)}%`) }];
  new uPlot({ width: Math.min(1100, chart.clientWidth || 900), height: 260, series, axes, scales: { "%": { range: (_, low, high) => [0, Math.max(1, high || 0)] } } }, data, chart);
}

async function showServed() {
  const id = $("served-series").value.trim();
  const chart = $("served-chart");
  chart.replaceChildren();
  if (!id) return;
  try {
    const served = await call(`/ui/data/served?series=${encodeURIComponent(id)}`);
    const versions = Object.keys(served.versions);
    const weeks = [...new Set([...served.actual.weeks, ...versions.flatMap((v) => served.versions[v].weeks)])].sort();
    const at = (list, values) => weeks.map((w) => { const i = list.indexOf(w); return i < 0 ? null : values[i]; });
    const data = [weeks.map(seconds), at(served.actual.weeks, served.actual.units_sold),
      ...versions.map((v) => at(served.versions[v].weeks, served.versions[v].forecast))];
    const colors = ["#2f6fde", "#d9822b", "#2b9d5b", "#8e44ad"];
    const series = [{}, { label: "sold", stroke: "#1d2330", width: 2 },
      ...versions.map((v, i) => ({ label: `${v} one week ahead`, stroke: colors[i % colors.length] }))];
    new uPlot({ width: Math.min(1100, chart.clientWidth || 900), height: 300, series, axes: AXES }, data, chart);
  } catch (error) {
    message("accuracy-message", error.message);
  }
}

// ---- the registry ----

async function loadRegistry() {
  const found = await call("/ui/data/registry");
  const plots = $("plots");
  plots.replaceChildren();
  fillTable($("versions-table"), ["version", "", "created", "model", "network", "rows", "weeks", "holdout WAPE: model / naive / linear", "plots"],
    found.versions.map((v) => {
      const marks = [v.version === found.champion ? "champion" : "", v.version === found.rollback_target ? "rollback target" : ""].filter(Boolean).join(", ");
      const wape = v.holdout_wape || {};
      (v.plots || []).forEach((name) => {
        const image = document.createElement("img");
        image.src = `/ui/data/versions/${v.version}/${name}`;
        image.alt = `${v.version} ${name}`;
        plots.appendChild(image);
      });
      return [v.version, marks, (v.created_at || "").slice(0, 16).replace("T", " "), v.model || v.error || "", v.architecture || "",
        number(v.rows, 0), (v.weeks || []).join(" to "), ["model", "naive", "linear"].map((k) => number(wape[k], 2)).join(" / "), (v.plots || []).join(", ")];
    }));
  fillTable($("history-table"), ["when", "event", "version", "champion before", "why", "by"],
    found.history.map((h) => [(h.at || "").replace("T", " ").replace("Z", ""), h.event, h.version || "", h.champion_before || "", h.reason || "", h.by || ""]));
}

// ---- start ----

async function start() {
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
  state.overview = await call("/ui/data/overview");
  $("model").textContent = `serving model ${state.overview.version}`;
  $("levels").value = state.overview.levels.join(",");
  $("series-names").replaceChildren(...state.overview.series.map((name) => Object.assign(document.createElement("option"), { value: name })));
  staticInputs();
  planTable();
  $("weeks").addEventListener("change", planTable);
  $("forecast").addEventListener("click", forecast);
  $("download").addEventListener("click", download);
  $("plan-file").addEventListener("change", (event) => event.target.files[0] && uploadPlan(event.target.files[0]));
  $("refresh").addEventListener("click", loadAccuracy);
  $("show-served").addEventListener("click", showServed);
  document.body.dataset.ready = "true";
}

start().catch((error) => message("message", error.message));
