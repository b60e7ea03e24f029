// openflash dashboard: confirmations, the endpoint list's refresh and filter, charts of the
// last hour (hand-drawn SVG) and the live log tail (server-sent events). No dependencies.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const LOG_LINES_KEPT = 2000;

// Actions ask first: every form with data-confirm.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// The endpoint list: the tables are re-rendered by the server with the filter's values,
// every few seconds and as the filter changes; nothing is fetched while the tab is hidden.
function endpointList() {
  const box = document.getElementById("endpoint-tables");
  const form = document.getElementById("endpoint-filter");
  if (!box || !form) {
    return;
  }
  let pending = null;
  async function refresh() {
    const query = new URLSearchParams(new FormData(form));
    history.replaceState(null, "", "?" + query.toString());
    query.set("rows", "1");
    const answer = await fetch(box.dataset.rows.split("?")[0] + "?" + query.toString(),
                               {credentials: "same-origin"});
    if (answer.redirected || !answer.ok) {
      return; // signed out meanwhile: the next navigation shows the login page
    }
    box.innerHTML = await answer.text();
  }
  form.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(refresh, 200);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  setInterval(() => { if (!document.hidden) refresh(); }, Number(box.dataset.every) * 1000);
}

function format(value) {
  if (value === null || value === undefined) {
    return "—";
  }
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2).replace(/\.?0+$/, "");
}

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, value);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

// One line chart: series share the y axis; the x axis is the last hour, now at the right.
// A missing value (no request in an interval) breaks the line instead of drawing a zero.
function drawChart(figure, points, now) {
  const svg = figure.querySelector("svg");
  const keys = figure.dataset.series.split(" ");
  const width = 600, height = 140, left = 40, bottom = 16, top = 6;
  const span = 3600;
  let most = 0;
  for (const point of points) {
    for (const key of keys) {
      if (point[key] !== null && point[key] > most) most = point[key];
    }
  }
  most = most > 0 ? most * 1.1 : 1;
  const x = (at) => left + (width - left) * (1 - (now - at) / span);
  const y = (value) => top + (height - top - bottom) * (1 - value / most);
  svg.replaceChildren(
    element("line", {x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis"}),
    element("text", {x: 2, y: top + 8, class: "tick"}, format(most)),
    element("text", {x: 2, y: height - bottom, class: "tick"}, "0"),
    element("text", {x: left, y: height - 2, class: "tick"}, "-60 min"),
    element("text", {x: width - 24, y: height - 2, class: "tick"}, "now"));
  keys.forEach((key, index) => {
    let path = "";
    let drawing = false;
    for (const point of points) {
      if (point.at < now - span || point[key] === null) {
        drawing = false;
        continue;
      }
      path += (drawing ? "L" : "M") + x(point.at).toFixed(1) + " " + y(point[key]).toFixed(1);
      drawing = true;
    }
    svg.append(element("path", {d: path, class: "series series-" + index}));
  });
  const last = points[points.length - 1];
  const latest = figure.querySelector(".latest");
  latest.textContent = last ? "— now " + keys.map((key) => format(last[key])).join(" / ")
                            : "— no sample yet";
}

function charts() {
  const section = document.querySelector("[data-history]");
  if (!section) {
    return;
  }
  async function refresh() {
    const answer = await fetch(section.dataset.history, {credentials: "same-origin"});
    if (!answer.ok || answer.redirected) {
      return;
    }
    const body = await answer.json();
    const now = Date.now() / 1000;
    for (const figure of section.querySelectorAll("figure[data-series]")) {
      drawChart(figure, body.points, now);
    }
  }
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); },
              Math.max(1, Number(section.dataset.every)) * 1000);
}

// The log tail: each event carries new lines; the browser reconnects by itself and the
// server continues from the last event's id.
function logTail() {
  const log = document.getElementById("log");
  if (!log) {
    return;
  }
  const state = document.getElementById("log-state");
  const source = new EventSource(log.dataset.stream);
  source.onopen = () => { state.textContent = "following"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (event) => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(event.data + "\n");
    while (log.childNodes.length > LOG_LINES_KEPT) {
      log.firstChild.remove();
    }
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  };
}

endpointList();
charts();
logTail();
