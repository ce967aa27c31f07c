// A pipeline's chart on its page: the rows it loaded (inserted, updated, deleted, stacked) and
// its lag in seconds, from the progress history. The range bar switches range in place (the
// range stays in the URL); the chart is drawn again every 30 s while the tab is visible.
(function () {
  "use strict";
  const root = document.getElementById("progress-charts");
  if (!root || !window.Plotly || !window.RosettaCharts) return;
  const common = window.RosettaCharts; // static/js/chart-common.js
  const historyUrl = root.dataset.historyUrl;
  // Lag above this is "behind" (the dashboard's count); drawn as a dashed line when near.
  const behindSeconds = Number(root.dataset.behindSeconds) || null;
  const message = root.querySelector(".chart-message");
  const charts = [document.getElementById("chart-rows"), document.getElementById("chart-lag")];
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  const REDRAW_MS = 30000;
  const OPS = [["inserted", "#067647"], ["updated", "#2b59c3"], ["deleted", "#b42318"]];

  function apiQuery(search) {
    const wanted = new URLSearchParams(search);
    const query = new URLSearchParams();
    if (wanted.get("start")) {
      query.set("start", wanted.get("start"));
      if (wanted.get("end")) query.set("end", wanted.get("end"));
    } else {
      query.set("range", wanted.get("range") || "24h");
    }
    // A bar about two pixels wide at the narrowest: finer buckets would not show.
    query.set("max_points", String(Math.min(600, Math.max(60, Math.round(root.clientWidth / 2)))));
    return query;
  }

  // A duration as the pages say it (formatting.duration_words): "12 s", "42 min", "3 h 10 min".
  function durationWords(seconds) {
    seconds = Math.max(0, Math.trunc(seconds));
    if (seconds < 60) return seconds + " s";
    let minutes = Math.trunc(seconds / 60);
    if (minutes < 60) return minutes + " min";
    let hours = Math.trunc(minutes / 60);
    minutes %= 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    const days = Math.trunc(hours / 24);
    hours %= 24;
    if (days < 7) return hours ? days + " d " + hours + " h" : days + " d";
    return "about " + Math.round(seconds / 86400) + " days";
  }

  // Lag as the page's cards say it (formatting.lag_words).
  function lagWords(seconds) {
    if (seconds <= 0) return "0 s — caught up";
    if (seconds < 1) return "under 1 s";
    return durationWords(seconds);
  }

  // A time axis in the unit the largest lag needs, with ticks at round numbers of it.
  function lagAxis(top) {
    const units = [["s", 1, 120], ["min", 60, 2 * 3600], ["h", 3600, 2 * 86400], ["d", 86400, Infinity]];
    const unit = units.find(function (u) { return top < u[2]; });
    const span = Math.max(top, 1) / unit[1];
    const raw = span / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = Math.max(unit[1] === 1 ? 1 : 0, [1, 2, 2.5, 5, 10].map(function (m) { return m * magnitude; })
      .find(function (m) { return m >= raw; }));
    const tickvals = [], ticktext = [];
    for (let v = 0; v <= span * 1.05 + step / 2; v += step) {
      tickvals.push(v * unit[1]);
      ticktext.push(Number(v.toFixed(6)).toLocaleString("en") + " " + unit[0]);
    }
    return { tickmode: "array", tickvals: tickvals, ticktext: ticktext,
      range: [0, tickvals[tickvals.length - 1]] };
  }

  function iso(ms) { return new Date(ms).toISOString(); }

  // "2026-03-01 12:00 to 12:02 UTC": the bucket a bar or a point stands for.
  function bucketWords(startMs, widthMs) {
    const from = iso(startMs), to = iso(startMs + widthMs);
    const sameDay = from.slice(0, 10) === to.slice(0, 10);
    return from.slice(0, 16).replace("T", " ") + " to " +
      (sameDay ? to.slice(11, 16) : to.slice(0, 16).replace("T", " ")) + " UTC";
  }

  // Each bucket drawn at its middle, so a bar covers the minutes it counts. A bucket with
  // nothing recorded is left out by the API: no bar there, and a null point breaks the lag's
  // line instead of joining the buckets either side of it.
  function series(data) {
    const width = data.bucket_seconds * 1000;
    const starts = data.times.map(function (t) { return Date.parse(t); });
    const bars = { x: starts.map(function (s) { return iso(s + width / 2); }),
      words: starts.map(function (s) { return bucketWords(s, width); }) };
    const lag = { x: [], y: [], text: [] };
    starts.forEach(function (s, i) {
      if (i > 0 && s - starts[i - 1] > width) {
        lag.x.push(iso(starts[i - 1] + width)); lag.y.push(null); lag.text.push("");
      }
      const seconds = data.lag_seconds[i], bytes = data.lag_bytes[i];
      lag.x.push(bars.x[i]);
      lag.y.push(seconds);
      lag.text.push(seconds === null ? "" : lagWords(seconds) + " behind" +
        (bytes === null ? "" : ", " + common.sizePretty(bytes) + " of WAL (" + common.exactBytes(bytes) + ")") +
        "<br>" + bars.words[i]);
    });
    return { width: width, bars: bars, lag: lag };
  }

  function layout(title, data, narrow) {
    const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    const grid = dark ? "#344054" : "#e4e7ec";
    return {
      title: { text: title, font: { size: 14 } },
      margin: { l: 70, r: 20, t: 40, b: narrow ? 100 : 70 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: dark ? "#e4e7ec" : "#1d2433" },
      // The axis spans the range asked for, up to now, whatever the buckets cover.
      xaxis: { type: "date", title: { text: "UTC", standoff: 12 }, range: [data.start, data.end],
        automargin: true, nticks: narrow ? 4 : 0, gridcolor: grid },
      yaxis: { automargin: true, gridcolor: grid, zerolinecolor: grid, rangemode: "tozero", fixedrange: true },
      // Below the axis and its labels whatever their height: on a phone they take two lines.
      legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom", traceorder: "normal" },
      hovermode: "closest",
    };
  }

  function bucketTitle(seconds) {
    return seconds === 60 ? "minute" : durationWords(seconds);
  }

  let pending = null; // the request of the range last asked for; an older one is cancelled
  let drawnAt = 0;

  async function draw(search) {
    const range = common.markCurrent(root, search);
    root.setAttribute("aria-busy", "true");
    if (pending) pending.abort();
    const request = (pending = new AbortController());
    let data;
    try {
      data = await common.fetchHistory(historyUrl + "?" + apiQuery(search), request.signal);
    } catch (error) {
      if (request.signal.aborted) return;
      message.textContent = "Cannot show this range: " + error.message;
      message.hidden = false;
      // Do not leave another range's chart under the message.
      charts.forEach(function (chart) { Plotly.purge(chart); chart.hidden = true; });
      delete root.dataset.points;
      root.dataset.range = range;
      root.removeAttribute("aria-busy");
      return;
    }
    if (request.signal.aborted) return;
    const drawn = series(data);
    const narrow = root.clientWidth < 600;
    const per = bucketTitle(data.bucket_seconds);
    const rows = OPS.map(function (op) {
      return { name: op[0], type: "bar", x: drawn.bars.x, y: data[op[0]], width: drawn.width,
        marker: { color: op[1] }, customdata: drawn.bars.words,
        hovertemplate: "%{y:,} " + op[0] + "<br>%{customdata}<extra></extra>" };
    });
    const total = OPS.reduce(function (sum, op) {
      return sum + data[op[0]].reduce(function (a, b) { return a + b; }, 0);
    }, 0);
    const rowsTop = Math.max(0, ...data.times.map(function (_, i) {
      return data.inserted[i] + data.updated[i] + data.deleted[i];
    }));
    const rowsLayout = layout("Rows loaded per " + per + " (" + total.toLocaleString("en") + " in this range)", data, narrow);
    rowsLayout.barmode = "stack";
    rowsLayout.yaxis.tickformat = rowsTop >= 100000 ? "~s" : ",~r";
    if (rowsTop < 5) rowsLayout.yaxis.dtick = 1;
    rowsLayout.yaxis.title = { text: "rows" };
    if (data.times.length && !total) {
      rowsLayout.annotations = [{ xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
        font: { size: 13, color: "#98a2b3" }, text: "No rows loaded in this range" }];
    }

    const lagValues = drawn.lag.y.filter(function (v) { return v !== null; });
    const lagTop = Math.max(0, ...lagValues);
    const lag = { name: "lag (highest in each " + per + ")", type: "scatter", mode: "lines+markers",
      x: drawn.lag.x, y: drawn.lag.y, text: drawn.lag.text, connectgaps: false,
      marker: { size: 3 }, line: { color: "#b54708" }, hovertemplate: "%{text}<extra></extra>" };
    const lagLayout = layout("Lag behind the source, in time", data, narrow);
    const showBehind = behindSeconds && lagTop >= behindSeconds / 4;
    lagLayout.yaxis = Object.assign(lagLayout.yaxis, lagAxis(Math.max(lagTop, showBehind ? behindSeconds : 0)));
    if (showBehind) {
      lagLayout.shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: behindSeconds, y1: behindSeconds,
        name: "behind", line: { color: "#f79009", width: 1.5, dash: "dash" },
        label: { text: "behind: over " + durationWords(behindSeconds), textposition: "start", yanchor: "bottom",
          font: { size: 11, color: "#f79009" } } }];
    }

    // Nothing in the range: the message says so, and no empty axes are drawn under it.
    const empty = !data.times.length;
    message.textContent = empty ? "Nothing recorded in this range: the engine records rows and lag every few seconds while it runs the pipeline." : "";
    message.hidden = !empty;
    charts.forEach(function (chart) { chart.hidden = empty; });
    if (empty) {
      charts.forEach(function (chart) { Plotly.purge(chart); });
    } else {
      await Plotly.react("chart-rows", rows, rowsLayout, config);
      await Plotly.react("chart-lag", [lag], lagLayout, config);
    }
    drawnAt = Date.now();
    root.dataset.range = range;
    root.dataset.points = String(data.times.length);
    root.dataset.rows = String(total);
    root.dataset.lagPoints = String(lagValues.length);
    root.dataset.bucketSeconds = String(data.bucket_seconds);
    root.removeAttribute("aria-busy");
  }

  // A range that ends now moves on: draw it again every 30 s while the tab is visible, and
  // at once when the tab comes back after longer. A custom range with an end stays put.
  function redrawIfDue() {
    if (document.visibilityState !== "visible") return;
    if (new URLSearchParams(location.search).get("end")) return;
    if (Date.now() - drawnAt >= REDRAW_MS - 1000) draw(location.search);
  }
  setInterval(redrawIfDue, REDRAW_MS);
  document.addEventListener("visibilitychange", redrawIfDue);

  common.wireRangeBar(root, draw);
  draw(location.search);
})();
