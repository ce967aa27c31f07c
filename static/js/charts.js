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

  function trace(name, series, x, unit) {
    const hover = "%{y:.3~s}" + unit + " max, %{customdata[0]:.3~s}" + unit + " min, %{customdata[1]:.3~s}" + unit + " last";
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

  function layout(title, unit) {
    return {
      title: { text: title, font: { size: 14 } },
      margin: { l: 60, r: 20, t: 40, b: 40 },
      xaxis: { type: "date", title: { text: "UTC" } },
      yaxis: { tickformat: ".3~s", ticksuffix: unit, rangemode: "tozero" },
      legend: { orientation: "h", y: -0.2 },
      hovermode: "x unified",
    };
  }

  async function draw(search) {
    const range = markCurrent(search);
    root.setAttribute("aria-busy", "true");
    let data;
    try {
      const response = await fetch(historyUrl + "?" + apiQuery(search), { headers: { Accept: "application/json" } });
      data = await response.json();
      if (!response.ok) throw new Error(data.message || response.statusText);
    } catch (error) {
      message.textContent = "Cannot show this range: " + error.message;
      message.hidden = false;
      root.removeAttribute("aria-busy");
      return;
    }
    const x = data.buckets;
    const wal = [trace("WAL directory", data.series.size_bytes, x, "B")];
    Object.keys(data.slots).sort().forEach(function (slot) {
      wal.push(trace("retained by " + slot, data.slots[slot].retained_bytes, x, "B"));
    });
    const rate = [trace("WAL generation rate", data.series.wal_rate_bytes_per_second, x, "B/s")];
    const empty = wal.concat(rate).every(function (t) { return t.y.every(function (v) { return v === null; }); });
    message.textContent = empty ? "No samples in this range." : "";
    message.hidden = !empty;
    await Plotly.react("chart-wal", wal, layout("WAL directory and WAL retained per slot", "B"), config);
    await Plotly.react("chart-rate", rate, layout("WAL generation rate", "B/s"), config);
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
