// Small page behaviours, kept out of the markup so a strict Content-Security-Policy
// (no inline script, no eval) can apply. Loaded with `defer` by base.html.
(function () {
  "use strict";

  // An htmx swap (the dashboard's 30 s poll) replaces the <details> an operator opened:
  // remember which ones were open, by id, and open them again in the new content.
  var openBeforeSwap = [];

  document.addEventListener("htmx:beforeSwap", function (event) {
    // htmx swaps synchronously after this event, so the list is always this swap's.
    openBeforeSwap = [];
    var target = event.detail.target;
    if (!event.detail.shouldSwap || !target || !target.querySelectorAll) return;
    var open = Array.prototype.slice.call(target.querySelectorAll("details[id][open]"));
    if (target.matches("details[id][open]")) open.push(target);
    openBeforeSwap = open.map(function (details) { return details.id; });
  });

  document.addEventListener("htmx:afterSwap", function () {
    openBeforeSwap.forEach(function (id) {
      var details = document.getElementById(id);
      if (details && details.tagName === "DETAILS") details.open = true;
    });
    openBeforeSwap = [];
  });

  // [data-refresh-seconds]: sent rosetta:refresh (its hx-trigger) that often while the tab is
  // visible, and at once when the tab becomes visible again; never while hidden.
  function refreshVisible() {
    if (document.visibilityState !== "visible" || !window.htmx) return;
    document.querySelectorAll("[data-refresh-seconds]").forEach(function (element) {
      window.htmx.trigger(element, "rosetta:refresh");
    });
  }
  var every = document.querySelector("[data-refresh-seconds]");
  if (every) setInterval(refreshVisible, Number(every.getAttribute("data-refresh-seconds")) * 1000);
  document.addEventListener("visibilitychange", refreshVisible);

  // <button data-confirm="Question?">: ask before the form is sent.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  // <input data-select-on-focus>: a value to copy is selected whole when clicked or focused.
  function selectAll(event) {
    var input = event.target;
    if (input && input.hasAttribute && input.hasAttribute("data-select-on-focus")) input.select();
  }
  document.addEventListener("focusin", selectAll);
  document.addEventListener("click", selectAll);

  // <div data-show-when="type=webhook">: shown only while the form's field `type` has that
  // value (a channel's signing secret is for webhooks alone).
  function showWhen() {
    document.querySelectorAll("[data-show-when]").forEach(function (element) {
      var rule = element.getAttribute("data-show-when").split("=");
      var form = element.closest("form");
      var field = form && form.elements[rule[0]];
      if (field) element.hidden = field.value !== rule[1];
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("form") &&
        event.target.closest("form").querySelector("[data-show-when]")) showWhen();
  });
  showWhen();

  // <select data-submit-on-change>: a filter applied as soon as it is chosen (text fields
  // apply on Enter, so leaving one does not redraw the form under the next click).
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.matches && select.matches("select[data-submit-on-change]") && select.form) {
      select.form.requestSubmit();
    }
  });

  // <form data-omit-empty>: its htmx GET leaves blank fields out, so the URL it pushes says
  // only the filters set (/?state=failing, not /?q=&state=failing).
  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (!form || !form.matches || !form.matches("form[data-omit-empty]")) return;
    var parameters = event.detail.parameters;
    Object.keys(parameters).forEach(function (name) {
      if (!String(parameters[name]).trim()) delete parameters[name];
    });
  });

  // .table-scroll: a table wider than its box scrolls inside it. Name the sides with more to see
  // in data-more ("left", "right", "left right"), which the CSS fades, and let the keyboard
  // scroll the box while it scrolls. Rechecked when it scrolls, when it or its table changes
  // size (a window turned, a "why" opened) and after every htmx swap.
  var watchSize = window.ResizeObserver ? new ResizeObserver(function (entries) {
    entries.forEach(function (entry) { markScroll(entry.target.closest(".table-scroll")); });
  }) : null;

  function markScroll(box) {
    if (!box) return;
    var end = box.scrollWidth - box.clientWidth;
    var more = [];
    if (end > 1 && box.scrollLeft > 1) more.push("left");
    if (end > 1 && box.scrollLeft < end - 1) more.push("right");
    if (more.length) {
      box.setAttribute("data-more", more.join(" "));
      if (!box.hasAttribute("tabindex")) box.setAttribute("tabindex", "0");
    } else if (box.hasAttribute("data-more")) {
      box.removeAttribute("data-more");
      box.removeAttribute("tabindex");
    }
  }

  function markScrolls() {
    document.querySelectorAll(".table-scroll").forEach(function (box) {
      if (watchSize) {
        watchSize.observe(box);
        if (box.firstElementChild) watchSize.observe(box.firstElementChild);
      }
      markScroll(box);
    });
  }
  document.addEventListener("scroll", function (event) {
    if (event.target.matches && event.target.matches(".table-scroll")) markScroll(event.target);
  }, true);
  document.addEventListener("htmx:afterSettle", markScrolls);
  window.addEventListener("resize", markScrolls);
  markScrolls();

  // <a data-export-form="id">: the export takes the form's filters as they are typed now,
  // applied or not.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-export-form]") : null;
    var form = link && document.getElementById(link.getAttribute("data-export-form"));
    if (!form) return;
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (String(value).trim()) params.append(name, value);
    });
    link.href = link.pathname + (params.toString() ? "?" + params : "");
  });
})();
