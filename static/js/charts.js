// WAL trend charts on a source's page: fetch the bucketed history as JSON, draw it with Plotly,
// and switch ranges without reloading the page (the range stays in the URL).
(function () {
  "use strict";
  const root = document.getElementById("wal-charts");
  if (!root || !window.Plotly || !window.RosettaCharts) return;
  const common = window.RosettaCharts; // static/js/chart-common.js
  const sizePretty = common.sizePretty;
  const exact = common.exactBytes;
  const historyUrl = root.dataset.historyUrl;
  const message = root.querySelector(".chart-message");
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  function apiQuery(search) {
    const wanted = new URLSearchParams(search);
    const query = new URLSearchParams();
    if (wanted.get("start")) {
      query.set("start", wanted.get("start"));
      if (wanted.get("end")) query.set("end", wanted.get("end"));
    } else {
      query.set("start", wanted.get("range") || "24h");
    }
    // About one bucket per pixel of chart width is as fine as a chart can show.
    query.set("max_points", String(Math.min(1000, Math.max(100, Math.round(root.clientWidth)))));
    return query;
  }

  // A setting as the operator typed it: "5 GB" when exact, else as pg_size_pretty says it.
  function settingSize(bytes) {
    const units = [["TB", Math.pow(1024, 4)], ["GB", Math.pow(1024, 3)], ["MB", Math.pow(1024, 2)], ["kB", 1024]];
    for (let i = 0; i < units.length; i++) {
      if (bytes >= units[i][1] && bytes % units[i][1] === 0) return bytes / units[i][1] + " " + units[i][0];
    }
    return sizePretty(bytes);
  }

  // An axis in 1024-based units: ticks at round numbers of the unit the largest value needs.
  function sizeAxis(traces, suffix) {
    const values = traces.flatMap(function (t) { return t.y.filter(function (v) { return v !== null; }); });
    const top = Math.max(1, ...values);
    const names = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let power = 0;
    while (power < names.length - 1 && top >= Math.pow(1024, power + 1)) power++;
    const unit = Math.pow(1024, power);
    const span = top / unit;
    const raw = span / 5;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(function (m) { return m * magnitude; }).find(function (m) { return m >= raw; });
    const tickvals = [], ticktext = [];
    for (let v = 0; v <= span * 1.05 + step / 2; v += step) {
      tickvals.push(v * unit);
      ticktext.push(Number(v.toFixed(6)).toLocaleString("en") + " " + names[power] + suffix);
    }
    return { tickmode: "array", tickvals: tickvals, ticktext: ticktext, rangemode: "tozero" };
  }

  // What a bucket of the history is, for a hover: "this hour", "this 6-hour bucket".
  function bucketWords(seconds) {
    const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
    const unit = units.find(function (u) { return seconds % u[0] === 0; });
    const count = seconds / unit[0];
    return count === 1 ? "this " + unit[1] : "this " + count + "-" + unit[1] + " bucket";
  }

  // The line is each point's last value; the shaded band its bucket's min to max, so a spike
  // between two points stays visible.
  function traces(name, series, x, suffix, colour, bucketSeconds) {
    const text = series.last.map(function (v, i) {
      if (v === null) return "";
      let hover = sizePretty(v) + suffix + " (" + exact(v) + suffix + ")";
      if (series.min[i] !== series.max[i]) {
        hover += "<br>" + sizePretty(series.min[i]) + suffix + " to " + sizePretty(series.max[i]) + suffix +
          " in " + bucketWords(bucketSeconds || 1);
      }
      return hover;
    });
    const band = { showlegend: false, hoverinfo: "skip", mode: "lines", line: { width: 0 },
      legendgroup: name, type: "scatter" };
    // A fill to the previous trace would span a gap in it: the band is one shape per unbroken
    // run of points (along its max, back along its min), a null between shapes, so a failed
    // sample or a slot created again leaves no shading over the gap.
    const outline = { x: [], y: [] };
    runs(series, x).forEach(function (run) {
      outline.x.push(...run.x, ...run.x.slice().reverse(), null);
      outline.y.push(...run.max, ...run.min.slice().reverse(), null);
    });
    return [
      Object.assign({}, band, outline, { fill: "toself", fillcolor: colour + "33" }),
      { name: name, x: x, y: series.last, text: text, type: "scatter", mode: "lines+markers",
        marker: { size: 3 }, line: { color: colour }, legendgroup: name,
        connectgaps: false, // a failed sample is a null point: the line breaks there
        hovertemplate: "%{text}<extra>" + name + "</extra>" },
    ];
  }

  // The unbroken runs of a series' min-max band: from a point with values to the next null.
  function runs(series, x) {
    const found = [];
    let run = null;
    x.forEach(function (t, i) {
      if (series.min[i] === null || series.max[i] === null) { run = null; return; }
      if (run === null) { run = { x: [], min: [], max: [] }; found.push(run); }
      run.x.push(t); run.min.push(series.min[i]); run.max.push(series.max[i]);
    });
    return found;
  }

  // What the lines are drawn through. Samples at their own times: every point, a failed
  // sample a null point that breaks the lines. Buckets: each bucket's last good sample; a
  // failure is only its red mark, and a bucket with no good sample (the monitor stopped, the
  // source failed throughout, or was not there yet) is a gap: a null point at its start
  // breaks every line and band there instead of joining the buckets either side of it.
  function linePoints(data) {
    const width = data.bucket_seconds * 1000;
    if (!width) return data;
    const picked = []; // for each point drawn, the index of the point it is, or -1 for a break
    const times = [];
    let before = null;
    data.times.forEach(function (t, i) {
      if (data.errors[i] !== null) return;
      const bucket = Math.floor(Date.parse(t) / width);
      if (before !== null && bucket > before + 1) {
        picked.push(-1);
        times.push(new Date((before + 1) * width).toISOString());
      }
      picked.push(i);
      times.push(t);
      before = bucket;
    });
    function spread(values) { return picked.map(function (i) { return i < 0 ? null : values[i]; }); }
    function figures(series) {
      return series && Object.assign({}, series, { last: spread(series.last), min: spread(series.min), max: spread(series.max) });
    }
    const series = {}, slots = {};
    Object.keys(data.series).forEach(function (name) { series[name] = figures(data.series[name]); });
    Object.keys(data.slots).forEach(function (name) { slots[name] = figures(data.slots[name]); });
    return Object.assign({}, data, { times: times, errors: spread(data.errors), series: series, slots: slots,
      other_slots: figures(data.other_slots), gaps: picked.filter(function (i) { return i < 0; }).length });
  }

  // A slot dropped and created again starts a new series: a null point just before the new
  // series' first one ends the old line there instead of joining the two.
  function withBreaks(series, x) {
    const starts = new Set(series.series_starts || []);
    if (!starts.size) return { series: series, x: x };
    const out = { last: [], min: [], max: [] }, times = [];
    x.forEach(function (t, i) {
      if (starts.has(t)) {
        times.push(t);
        out.last.push(null); out.min.push(null); out.max.push(null);
      }
      times.push(t);
      out.last.push(series.last[i]); out.min.push(series.min[i]); out.max.push(series.max[i]);
    });
    return { series: out, x: times };
  }

  // Failed samples: a red mark on the axis at their time, with the error on hover.
  function failures(data) {
    const x = [], text = [];
    data.errors.forEach(function (error, i) {
      if (error !== null) { x.push(data.times[i]); text.push(error); }
    });
    return { name: "failed samples", x: x, y: x.map(function () { return 0; }), text: text,
      type: "scatter", mode: "markers", marker: { symbol: "x", size: 8, color: "#b42318" },
      hovertemplate: "sample failed: %{text}<extra></extra>" };
  }

  const COLOURS = ["#2b59c3", "#067647", "#b54708", "#7a2eb3", "#0e7c86", "#c11574", "#4e5ba6",
    "#9e6b00", "#344054", "#b42318", "#107569", "#6941c6", "#667085"];

  // The alert thresholds as dashed horizontal lines, and the periods alerts fired as shaded
  // bands (red critical, amber warning). A threshold far above everything drawn would squash
  // the lines flat: the axis reaches it only when the data comes within a quarter of it, and
  // the chart says where it is otherwise.
  const SEVERITY_COLOURS = { critical: "#d92d20", warning: "#f79009" };

  function thresholdShapes(thresholds, top) {
    const shapes = [], off = [];
    let reach = top;
    [["warning", thresholds && thresholds.warning_bytes], ["critical", thresholds && thresholds.critical_bytes]].forEach(function (pair) {
      const severity = pair[0], bytes = pair[1];
      if (bytes === null || bytes === undefined) return;
      const shown = top >= bytes / 4;
      if (shown) reach = Math.max(reach, bytes);
      else off.push(severity + " at " + settingSize(bytes));
      shapes.push({
        type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: bytes, y1: bytes, layer: "above",
        name: severity + " threshold", visible: shown,
        line: { color: SEVERITY_COLOURS[severity], width: 1.5, dash: severity === "critical" ? "solid" : "dash" },
        label: { text: severity + " " + settingSize(bytes), textposition: "start", yanchor: "bottom",
          font: { size: 11, color: SEVERITY_COLOURS[severity] } },
      });
    });
    return { shapes: shapes, reach: reach, off: off };
  }

  // Union of [start, end] intervals (ISO strings or null ends), as sorted [start, end] numbers.
  function union(intervals) {
    const sorted = intervals.map(function (i) { return [Date.parse(i[0]), Date.parse(i[1])]; })
      .filter(function (i) { return i[1] > i[0]; })
      .sort(function (a, b) { return a[0] - b[0]; });
    const merged = [];
    sorted.forEach(function (i) {
      const last = merged[merged.length - 1];
      if (last && i[0] <= last[1]) last[1] = Math.max(last[1], i[1]);
      else merged.push(i.slice());
    });
    return merged;
  }

  // [a, b] minus every interval of `cut` (both sorted and disjoint).
  function subtract(intervals, cut) {
    const out = [];
    intervals.forEach(function (i) {
      let pieces = [i];
      cut.forEach(function (c) {
        pieces = pieces.flatMap(function (p) {
          if (c[1] <= p[0] || c[0] >= p[1]) return [p];
          const keep = [];
          if (c[0] > p[0]) keep.push([p[0], c[0]]);
          if (c[1] < p[1]) keep.push([c[1], p[1]]);
          return keep;
        });
      });
      out.push.apply(out, pieces);
    });
    return out;
  }

  // The periods something fired, without overlaps: critical while any critical alert fired,
  // warning while only warnings did; each with the alerts that fired in it.
  function firingPeriods(spans) {
    const of = function (severity) {
      return union((spans || []).filter(function (s) { return s.severity === severity; })
        .map(function (s) { return [s.start, s.end]; }));
    };
    const critical = of("critical");
    const periods = { critical: critical, warning: subtract(of("warning"), critical) };
    return ["critical", "warning"].flatMap(function (severity) {
      return periods[severity].map(function (i) {
        const names = [];
        (spans || []).forEach(function (s) {
          if (Date.parse(s.start) < i[1] && Date.parse(s.end) > i[0]) {
            const name = s.severity + " " + s.rule.replace(/_/g, " ") + (s.slot_name ? " (" + s.slot_name + ")" : "");
            if (names.indexOf(name) < 0) names.push(name);
          }
        });
        return { severity: severity, start: new Date(i[0]).toISOString(), end: new Date(i[1]).toISOString(), names: names };
      });
    });
  }

  // One shaded band per period (overlapping alerts do not stack into an opaque block).
  function spanShapes(periods) {
    return periods.map(function (p) {
      return {
        type: "rect", xref: "x", x0: p.start, x1: p.end, yref: "paper", y0: 0, y1: 1, layer: "below",
        line: { width: 0 }, fillcolor: SEVERITY_COLOURS[p.severity], opacity: 0.14,
        name: p.severity + " alert firing",
      };
    });
  }

  // A thick stroke on the time axis under each band: hovering it names the alerts that fired
  // (a shape has no hover of its own).
  function spanTraces(periods) {
    return ["critical", "warning"].map(function (severity) {
      const x = [], text = [];
      periods.forEach(function (p) {
        if (p.severity !== severity) return;
        const what = p.names.join("<br>");
        x.push(p.start, p.end, null);
        text.push(what, what, "");
      });
      return { name: severity + " alert firing", x: x, y: x.map(function (t) { return t === null ? null : 0; }),
        text: text, type: "scatter", mode: "lines", connectgaps: false,
        line: { width: 6, color: SEVERITY_COLOURS[severity] },
        hovertemplate: "%{text}<extra>alerts firing</extra>" };
    }).filter(function (trace) { return trace.x.length > 0; });
  }

  function layout(title, axis, data) {
    const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    const ink = dark ? "#e4e7ec" : "#1d2433";
    const narrow = root.clientWidth < 600;
    const grid = dark ? "#344054" : "#e4e7ec";
    return {
      title: { text: title, font: { size: 14 } },
      margin: { l: 80, r: 20, t: 40, b: narrow ? 110 : 80 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: ink },
      // The axis spans the range asked for, up to now, whatever the samples cover.
      xaxis: { type: "date", title: { text: "UTC", standoff: 12 }, range: [data.start, data.end],
        automargin: true, nticks: narrow ? 4 : 0, gridcolor: grid },
      yaxis: Object.assign({ automargin: true, gridcolor: grid, zerolinecolor: grid }, axis),
      // Below the axis and its labels whatever their height: on a phone they take two lines.
      legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" },
      hovermode: "closest",
    };
  }

  let pending = null; // the request of the range last asked for; an older one is cancelled

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
      Plotly.purge("chart-wal");
      Plotly.purge("chart-rate");
      delete root.dataset.points;
      root.dataset.range = range;
      root.removeAttribute("aria-busy");
      return;
    }
    const fails = failures(data);
    data = linePoints(data);
    const x = data.times;
    const walSeries = [["WAL directory", data.series.size_bytes]];
    Object.keys(data.slots).forEach(function (slot) {
      const label = "retained by " + slot + (data.slots[slot].own ? "" : " (" + (data.slots[slot].database || "physical") + ")");
      walSeries.push([label, data.slots[slot]]);
    });
    if (data.other_slots) walSeries.push(["the other " + data.other_slots.count + " slots (the most one retains)", data.other_slots]);
    let wal = [];
    walSeries.forEach(function (s, i) {
      const broken = withBreaks(s[1], x);
      wal = wal.concat(traces(s[0], broken.series, broken.x, "", COLOURS[i % COLOURS.length], data.bucket_seconds));
    });
    const lines = wal.filter(function (t) { return t.mode === "lines+markers"; });
    const rate = traces("WAL generation rate", data.series.wal_rate_bytes_per_second, x, "/s", COLOURS[0], data.bucket_seconds);
    const empty = lines.concat(rate).every(function (t) { return t.y.every(function (v) { return v === null; }); });
    message.textContent = empty ? (fails.x.length ? "Every sample in this range failed." : "No samples in this range.") : "";
    message.hidden = !empty;
    if (request.signal.aborted) return;
    // The lines and their bands: a bucket's max above its last value is drawn, so the axis
    // reaches it.
    const walTop = Math.max(0, ...wal.flatMap(function (t) { return t.y.filter(function (v) { return v !== null; }); }));
    const limits = thresholdShapes(data.thresholds, walTop);
    // The axis is made for the highest of the data and the thresholds shown.
    const walAxis = sizeAxis(wal.concat([{ y: [limits.reach] }]), "");
    const walLayout = layout("WAL directory and WAL retained per slot", walAxis, data);
    const periods = firingPeriods(data.alert_spans);
    walLayout.shapes = limits.shapes.concat(spanShapes(periods));
    if (limits.off.length) {
      walLayout.annotations = [{ xref: "paper", yref: "paper", x: 1, y: 1, xanchor: "right", yanchor: "bottom",
        showarrow: false, font: { size: 11, color: "#98a2b3" }, text: "Alert thresholds above the chart: " + limits.off.join(", ") }];
    }
    const walTraces = wal.concat([fails], spanTraces(periods));
    root.dataset.thresholds = limits.shapes.filter(function (s) { return s.visible; }).map(function (s) { return s.name; }).join(",");
    root.dataset.alertSpans = String((data.alert_spans || []).length);
    // A legend of many lines takes rows (on a phone, most of the chart): the chart grows with it.
    document.getElementById("chart-wal").classList.toggle("chart-tall", lines.length > 8);
    await Plotly.react("chart-wal", walTraces, walLayout, config);
    await Plotly.react("chart-rate", rate.concat([fails]), layout("WAL generation rate", sizeAxis(rate, "/s"), data), config);
    root.dataset.range = range;
    root.dataset.points = String(x.length - (data.gaps || 0) + (data.bucket_seconds ? fails.x.length : 0));
    root.dataset.gaps = String(data.gaps || 0);
    root.dataset.bucketSeconds = String(data.bucket_seconds);
    root.removeAttribute("aria-busy");
  }

  common.wireRangeBar(root, draw);
  // The slot filter and the slot tables' links swap the tables and put their own URL in the
  // address bar: it keeps the charts' range.
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.elt.closest("#slots")) return;
    const wanted = new URLSearchParams(location.search);
    ["range", "start", "end"].forEach(function (name) {
      if (wanted.get(name)) event.detail.formData.set(name, wanted.get(name));
    });
  });
  draw(location.search);
})();
