// What the pages' charts share (static/js/charts.js, static/js/progress.js): sizes as
// PostgreSQL's pg_size_pretty prints them, and the range bar (1h to 30d, or a custom start
// and end) that redraws a chart in place and keeps the range in the URL.
(function () {
  "use strict";

  // pg_size_pretty's units: 1024-based bytes, kB, MB, GB, TB, PB; the size below which each
  // is used; whether it rounds halves.
  const UNITS = [["bytes", 10 * 1024, false], ["kB", 20 * 1024 - 1, true], ["MB", 20 * 1024 - 1, true],
    ["GB", 20 * 1024 - 1, true], ["TB", 20 * 1024 - 1, true], ["PB", 20 * 1024 - 1, true]];
  function halfRounded(v) { return Math.trunc((v + (v < 0 ? -1 : 1)) / 2); }

  function sizePretty(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    let size = Math.trunc(bytes);
    for (let i = 0; i < UNITS.length; i++) {
      const unit = UNITS[i];
      if (i === UNITS.length - 1 || Math.abs(size) < unit[1]) {
        return (unit[2] ? halfRounded(size) : size) + " " + unit[0];
      }
      const bits = 10 - (UNITS[i + 1][2] ? 1 : 0) + (unit[2] ? 1 : 0);
      size = Math.trunc(size / Math.pow(2, bits));
    }
  }

  // A byte count spelled out, for a hover: "845,712,384 bytes".
  function exactBytes(bytes) {
    return bytes === null || bytes === undefined ? "" : Math.round(bytes).toLocaleString("en") + " bytes";
  }

  // The range a query string asks for: "custom" when it has a start, else its range (24h).
  function rangeOf(search) {
    const wanted = new URLSearchParams(search);
    return wanted.get("start") ? "custom" : wanted.get("range") || "24h";
  }

  // Mark the current range in root's range bar and fill its custom form from `search`.
  function markCurrent(root, search) {
    const wanted = new URLSearchParams(search);
    const range = rangeOf(search);
    root.querySelectorAll("a[data-range]").forEach(function (link) {
      if (link.dataset.range === range) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    });
    const form = root.querySelector("form.custom-range");
    if (form) {
      form.elements.start.value = wanted.get("start") || "";
      form.elements.end.value = wanted.get("end") || "";
    }
    return range;
  }

  // The page's query string with `chosen` (a range, or a start and an end) in place of the
  // range it had: its other parameters, a slot filter say, stay.
  function withRange(chosen) {
    const search = new URLSearchParams(location.search);
    ["range", "start", "end"].forEach(function (name) { search.delete(name); });
    chosen.forEach(function (value, name) { if (value) search.set(name, value); });
    return "?" + search.toString();
  }

  // A range link or the custom form calls draw(search) instead of loading a page, and puts
  // the range in the URL; back and forward draw the range they return to.
  function wireRangeBar(root, draw) {
    root.addEventListener("click", function (event) {
      const link = event.target.closest("a[data-range]");
      if (!link) return;
      event.preventDefault();
      const search = withRange(new URLSearchParams({ range: link.dataset.range }));
      history.pushState(null, "", search);
      draw(search);
    });
    const form = root.querySelector("form.custom-range");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const search = withRange(new URLSearchParams({
          start: form.elements.start.value, end: form.elements.end.value,
        }));
        history.pushState(null, "", search);
        draw(search);
      });
    }
    window.addEventListener("popstate", function () { draw(location.search); });
  }

  // A chart's history as JSON; an error answer throws with the API's message.
  async function fetchHistory(url, signal) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, signal: signal });
    const data = await response.json();
    if (!response.ok) throw new Error(data.message || response.statusText);
    return data;
  }

  window.RosettaCharts = {
    fetchHistory: fetchHistory,
    sizePretty: sizePretty,
    exactBytes: exactBytes,
    rangeOf: rangeOf,
    markCurrent: markCurrent,
    wireRangeBar: wireRangeBar,
  };
})();
