// WAL trend charts on a source's page: fetch the bucketed history as JSON, draw it with Plotly,
// and switch ranges without reloading the page (the range stays in the URL).
(function () {
  "use strict";
  const root = document.getElementById("wal-charts");
  if (!root || !window.Plotly) return;
  const historyUrl = root.dataset.historyUrl;
  const message = root.querySelector(".chart-message");
  const form = root.querySelector("form.custom-range");
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

  function markCurrent(search) {
    const wanted = new URLSearchParams(search);
    const range = wanted.get("start") ? "custom" : wanted.get("range") || "24h";
    root.querySelectorAll("a[data-range]").forEach(function (link) {
      link.toggleAttribute("aria-current", link.dataset.range === range);
    });
    if (form) {
      form.elements.start.value = wanted.get("start") || "";
      form.elements.end.value = wanted.get("end") || "";
    }
    return range;
  }

  // SI prefixes (kB, MB, GB) from 1000 up; below that whole numbers, never "617mB/s".
  function numberFormat(traces) {
    const top = Math.max(0, ...traces.flatMap(function (t) { return t.y.filter(function (v) { return v !== null; }); }));
    return top >= 1000 ? ".3~s" : ",.0f";
  }

  function trace(name, series, x, unit, format) {
    const value = function (field) { return "%{" + field + ":" + format + "}" + unit; };
    const hover = value("y") + " max, " + value("customdata[0]") + " min, " + value("customdata[1]") + " last";
    return {
      name: name,
      x: x,
      y: series.max,
      customdata: series.min.map(function (low, i) { return [low, series.last[i]]; }),
      type: "scatter",
      mode: "lines+markers",
      marker: { size: 3 },
      connectgaps: false, // an empty bucket is a failed sample: show the gap
      hovertemplate: hover + "<extra>" + name + "</extra>",
    };
  }

  function layout(title, unit, format) {
    return {
      title: { text: title, font: { size: 14 } },
      margin: { l: 70, r: 20, t: 40, b: 60 },
      xaxis: { type: "date", title: { text: "UTC", standoff: 12 } },
      yaxis: { tickformat: format, ticksuffix: unit, rangemode: "tozero" },
      legend: { orientation: "h", y: -0.2 },
      hovermode: "x unified",
    };
  }

  let pending = null; // the request of the range last asked for; an older one is cancelled

  async function draw(search) {
    const range = markCurrent(search);
    root.setAttribute("aria-busy", "true");
    if (pending) pending.abort();
    const request = (pending = new AbortController());
    let data;
    try {
      const response = await fetch(historyUrl + "?" + apiQuery(search), {
        headers: { Accept: "application/json" },
        signal: request.signal,
      });
      data = await response.json();
      if (!response.ok) throw new Error(data.message || response.statusText);
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
    const x = data.buckets;
    const walSeries = [["WAL directory", data.series.size_bytes]].concat(
      Object.keys(data.slots).sort().map(function (slot) {
        return ["retained by " + slot, data.slots[slot].retained_bytes];
      })
    );
    const walFormat = numberFormat(walSeries.map(function (s) { return { y: s[1].max }; }));
    const wal = walSeries.map(function (s) { return trace(s[0], s[1], x, "B", walFormat); });
    const rateSeries = data.series.wal_rate_bytes_per_second;
    const rateFormat = numberFormat([{ y: rateSeries.max }]);
    const rate = [trace("WAL generation rate", rateSeries, x, "B/s", rateFormat)];
    const empty = wal.concat(rate).every(function (t) { return t.y.every(function (v) { return v === null; }); });
    message.textContent = empty ? "No samples in this range." : "";
    message.hidden = !empty;
    if (request.signal.aborted) return;
    await Plotly.react("chart-wal", wal, layout("WAL directory and WAL retained per slot", "B", walFormat), config);
    await Plotly.react("chart-rate", rate, layout("WAL generation rate", "B/s", rateFormat), config);
    root.dataset.range = range;
    root.dataset.points = String(x.length);
    root.removeAttribute("aria-busy");
  }

  root.addEventListener("click", function (event) {
    const link = event.target.closest("a[data-range]");
    if (!link) return;
    event.preventDefault();
    history.pushState(null, "", link.search);
    draw(link.search);
  });
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const search = "?" + new URLSearchParams(new FormData(form)).toString();
      history.pushState(null, "", search);
      draw(search);
    });
  }
  window.addEventListener("popstate", function () { draw(location.search); });
  draw(location.search);
})();
