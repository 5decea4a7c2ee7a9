/* atlasgen: small progressive enhancements. Classic script (no modules, no fetch) so it
   runs from file:// as well as from a web server; every page works without it. */
(function () {
  "use strict";

  /* "12", "3-7", "1, 4, 10-12" -> predicate on channel numbers; null when empty. */
  function parseChannelFilter(text) {
    var parts = text.split(/[\s,;]+/).filter(Boolean);
    if (!parts.length) return null;
    var ranges = [];
    for (var i = 0; i < parts.length; i++) {
      var m = /^(\d+)(?:\s*[-\u2013:]\s*(\d+))?$/.exec(parts[i]);
      if (!m) return function () { return false; };
      var lo = parseInt(m[1], 10);
      var hi = m[2] === undefined ? lo : parseInt(m[2], 10);
      ranges.push([Math.min(lo, hi), Math.max(lo, hi)]);
    }
    return function (channel) {
      return ranges.some(function (r) { return channel >= r[0] && channel <= r[1]; });
    };
  }

  function numberOrNull(value) {
    if (value === undefined || value === "") return null;
    var n = parseFloat(value);
    return isFinite(n) ? n : null;
  }

  /* Channel order ascending; activation and selectivity descending, missing values last. */
  function compareCards(key) {
    return function (a, b) {
      var ca = parseInt(a.dataset.channel, 10), cb = parseInt(b.dataset.channel, 10);
      if (key === "channel") return ca - cb;
      var va = numberOrNull(a.dataset[key]), vb = numberOrNull(b.dataset[key]);
      if (va === null && vb === null) return ca - cb;
      if (va === null) return 1;
      if (vb === null) return -1;
      return vb - va || ca - cb;
    };
  }

  function initLayerControls() {
    var form = document.getElementById("layer-controls");
    var grid = document.getElementById("unit-grid");
    if (!form || !grid) return;
    var input = document.getElementById("channel-filter");
    var sortBy = document.getElementById("sort-by");
    var status = document.getElementById("filter-status");
    var cards = Array.prototype.slice.call(grid.querySelectorAll(".unit-card"));

    function applyFilter() {
      var keep = parseChannelFilter(input.value);
      var shown = 0;
      cards.forEach(function (card) {
        var visible = !keep || keep(parseInt(card.dataset.channel, 10));
        card.hidden = !visible;
        if (visible) shown++;
      });
      status.textContent = keep ? shown + " of " + cards.length + " channels" : cards.length + " channels";
    }

    function applySort() {
      cards.slice().sort(compareCards(sortBy.value)).forEach(function (card) { grid.appendChild(card); });
    }

    /* A link to #unit-N must land on its card, even if the filter hid it. */
    function revealTarget() {
      var id = decodeURIComponent(location.hash.slice(1));
      if (!/^unit-\d+$/.test(id)) return;
      var card = document.getElementById(id);
      if (!card) return;
      if (card.hidden) {
        input.value = "";
        applyFilter();
      }
      card.scrollIntoView({ block: "start" });
    }

    form.hidden = false;
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    input.addEventListener("input", applyFilter);
    sortBy.addEventListener("change", applySort);
    window.addEventListener("hashchange", revealTarget);
    if (sortBy.value !== "channel") applySort(); /* the browser may restore a form value */
    applyFilter();
  }

  /* Citations say when the reader looked at the page, not when it was built. */
  function showToday() {
    var now = new Date();
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    var today = now.getFullYear() + "-" + pad(now.getMonth() + 1) + "-" + pad(now.getDate());
    Array.prototype.forEach.call(document.querySelectorAll("[data-today]"), function (el) {
      el.textContent = today;
    });
  }

  function init() {
    initLayerControls();
    showToday();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
