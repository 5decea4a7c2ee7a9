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

  /* "12:0.840 40:0.712" (a card's data-similar) -> {channel: Pearson r} */
  function parseSimilar(text) {
    var out = {};
    (text || "").split(" ").forEach(function (pair) {
      var parts = pair.split(":");
      if (parts.length === 2) out[parseInt(parts[0], 10)] = parseFloat(parts[1]);
    });
    return out;
  }

  function initLayerControls() {
    var form = document.getElementById("layer-controls");
    var grid = document.getElementById("unit-grid");
    if (!form || !grid) return;
    var input = document.getElementById("channel-filter");
    var showOnly = document.getElementById("show-only");
    var similarTo = document.getElementById("similar-to");
    var sortBy = document.getElementById("sort-by");
    var status = document.getElementById("filter-status");
    var cards = Array.prototype.slice.call(grid.querySelectorAll(".unit-card"));
    var byChannel = {};
    cards.forEach(function (card) { byChannel[card.dataset.channel] = card; });
    var similarOf = null; /* channel -> {channel: r}, parsed on first use */
    var order = "channel"; /* the order the grid is in */

    /* The channel typed in "co-activating with", its card, and the r of every channel linked to it
       (its own list, and the channels that list it: Pearson r is symmetric). */
    function coactivation() {
      var text = similarTo.value.trim();
      if (!/^\d+$/.test(text)) return text ? { missing: text } : null;
      var centre = parseInt(text, 10);
      if (!byChannel[centre]) return { missing: text };
      if (!similarOf) {
        similarOf = {};
        cards.forEach(function (card) { similarOf[card.dataset.channel] = parseSimilar(card.dataset.similar); });
      }
      var scores = {};
      var own = similarOf[centre];
      Object.keys(own).forEach(function (c) { scores[c] = own[c]; });
      Object.keys(similarOf).forEach(function (c) {
        var r = similarOf[c][centre];
        if (r !== undefined && (scores[c] === undefined || r > scores[c])) scores[c] = r;
      });
      return { centre: centre, scores: scores };
    }

    function arrange(key, coact) {
      if (key === order) return;
      var sorted = cards.slice();
      if (coact && coact.scores) {
        var rank = function (card) {
          var c = parseInt(card.dataset.channel, 10);
          if (c === coact.centre) return Infinity;
          var r = coact.scores[c];
          return r === undefined ? -Infinity : r;
        };
        sorted.sort(function (a, b) { return rank(b) - rank(a) || a.dataset.channel - b.dataset.channel; });
      } else {
        sorted.sort(compareCards(key));
      }
      sorted.forEach(function (card) { grid.appendChild(card); });
      order = key;
    }

    function apply() {
      var keep = parseChannelFilter(input.value);
      var mode = showOnly.value;
      var coact = coactivation();
      var shown = 0;
      cards.forEach(function (card) {
        var channel = parseInt(card.dataset.channel, 10);
        var visible = (!keep || keep(channel)) &&
          (mode === "all" || (mode === "dead") === (card.dataset.dead === "1")) &&
          (!coact || (coact.scores && (channel === coact.centre || coact.scores[channel] !== undefined)));
        card.hidden = !visible;
        if (visible) shown++;
      });
      arrange(coact && coact.scores ? "co:" + coact.centre : sortBy.value, coact);
      var text = shown === cards.length ? cards.length + " channels" : shown + " of " + cards.length + " channels";
      if (coact && coact.missing) text = "channel " + coact.missing + " is not on this page";
      else if (coact) text += ": channel " + coact.centre + " and the channels it co-activates with (Pearson r, highest first)";
      status.textContent = text;
      sortBy.disabled = !!(coact && coact.scores);
      markBranch();
    }

    /* The branch list: a link filters the grid to its channels; #branch-NAME (from a unit page) too. */
    var branchLinks = Array.prototype.slice.call(document.querySelectorAll(".branch-list a[data-range]"));
    function markBranch() {
      branchLinks.forEach(function (link) {
        if (link.dataset.range === input.value.trim()) link.setAttribute("aria-current", "true");
        else link.removeAttribute("aria-current");
      });
    }
    function showBranch(link) {
      input.value = link.dataset.range;
      apply();
    }
    branchLinks.forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        showBranch(link);
        grid.scrollIntoView({ block: "start" });
      });
    });

    /* A link to #unit-N must land on its card, even if a filter hid it; #branch-NAME shows that branch. */
    function revealTarget() {
      var id = decodeURIComponent(location.hash.slice(1));
      if (/^branch-[A-Za-z0-9_-]+$/.test(id)) {
        var item = document.getElementById(id);
        var link = item && item.querySelector("a[data-range]");
        if (link) showBranch(link);
        return;
      }
      if (!/^unit-\d+$/.test(id)) return;
      var card = document.getElementById(id);
      if (!card) return;
      if (card.hidden) {
        input.value = "";
        showOnly.value = "all";
        similarTo.value = "";
        apply();
      }
      card.scrollIntoView({ block: "start" });
    }

    form.hidden = false;
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    input.addEventListener("input", apply);
    showOnly.addEventListener("change", apply);
    similarTo.addEventListener("input", apply);
    sortBy.addEventListener("change", apply);
    window.addEventListener("hashchange", revealTarget);
    apply(); /* the browser may restore form values */
    revealTarget();
  }

  /* ---- search across the whole atlas, offline ---------------------------------------------
     The index (assets/search-index.js) is a script assigning window.ATLAS_SEARCH, loaded when the
     reader first uses the box: a page from file:// may load a script but may not fetch a file.
     Results are built with textContent only: no index text is ever parsed as HTML. */
  var SEARCH_LIMIT = 20;

  function searchTokens(query) {
    return query.toLowerCase().split(/[\s\/:#,]+/).filter(Boolean);
  }

  /* A score for the entry, or 0 when a token does not match it. Entry: [kind, url, model, layer,
     channel, branch, unit in branch, dead, note]. */
  function scoreEntry(entry, tokens) {
    var score = 0;
    var names = [entry[2].toLowerCase(), entry[3].toLowerCase(), entry[5].toLowerCase()];
    var note = entry[8].toLowerCase();
    for (var i = 0; i < tokens.length; i++) {
      var t = tokens[i];
      if (/^\d+$/.test(t)) {
        var n = parseInt(t, 10);
        if (entry[4] === n) score += 4;
        else if (entry[6] === n) score += 2; /* the unit's number within its branch */
        else if (note.indexOf(t) >= 0) score += 1; /* not names: "2" would find every unit of conv2 */
        else return 0;
      } else if (t === "dead") {
        if (entry[7]) score += 2;
        else if (note.indexOf(t) >= 0) score += 1;
        else return 0;
      } else {
        if (names[1] === t || names[0] === t || names[2] === t) score += 3;
        else if (names.some(function (name) { return name.indexOf(t) >= 0; })) score += 2;
        else if (note.indexOf(t) >= 0) score += 1;
        else return 0;
      }
    }
    return score + (entry[8] ? 0.1 : 0);
  }

  function entryTitle(entry) {
    if (entry[0] === "model") return entry[2];
    if (entry[0] === "layer") return entry[2] + " / " + entry[3];
    return entry[2] + " / " + entry[3] + " / channel " + entry[4];
  }

  function entryDetail(entry, tokens) {
    var parts = [];
    if (entry[5]) parts.push(entry[5] + " branch, unit " + entry[6]);
    if (entry[7]) parts.push("dead");
    var note = entry[8];
    if (note) {
      var lower = note.toLowerCase(), at = -1;
      tokens.forEach(function (t) { if (at < 0 && !/^\d+$/.test(t)) at = lower.indexOf(t); });
      var from = Math.max(0, at - 40);
      parts.push((from > 0 ? "\u2026" : "") + note.slice(from, from + 120) + (note.length > from + 120 ? "\u2026" : ""));
    }
    return parts.join(" \u00b7 ");
  }

  function initSearch() {
    var form = document.querySelector(".site-search");
    if (!form) return;
    var input = form.querySelector("input");
    var status = form.querySelector("output");
    var list = form.querySelector("ol");
    var indexUrl = form.dataset.index;
    var root = indexUrl.replace(/assets\/search-index\.js$/, "");
    var loading = false;

    /* Run the search once the index is there (loading it the first time). */
    function load() {
      if (window.ATLAS_SEARCH) return run();
      if (loading) return; /* run() follows when it arrives, with the box's value then */
      loading = true;
      status.textContent = "loading the index\u2026";
      var script = document.createElement("script");
      script.src = indexUrl;
      script.onload = function () { loading = false; status.textContent = ""; run(); };
      script.onerror = function () { loading = false; status.textContent = "the search index could not be loaded"; };
      document.head.appendChild(script);
    }

    function run() {
      var tokens = searchTokens(input.value);
      list.textContent = "";
      list.dataset.query = input.value; /* what the list shows results for */
      if (!tokens.length) {
        list.hidden = true;
        status.textContent = "";
        return;
      }
      var entries = window.ATLAS_SEARCH.entries, hits = [];
      for (var i = 0; i < entries.length; i++) {
        var score = scoreEntry(entries[i], tokens);
        if (score > 0) hits.push([score, i]);
      }
      hits.sort(function (a, b) { return b[0] - a[0] || a[1] - b[1]; });
      hits.slice(0, SEARCH_LIMIT).forEach(function (hit) {
        var entry = entries[hit[1]];
        var item = document.createElement("li");
        var link = document.createElement("a");
        link.href = root + entry[1];
        var title = document.createElement("span");
        title.className = "search-title";
        title.textContent = entryTitle(entry);
        link.appendChild(title);
        var detail = entryDetail(entry, tokens);
        if (detail) {
          var small = document.createElement("span");
          small.className = "search-detail";
          small.textContent = detail;
          link.appendChild(small);
        }
        item.appendChild(link);
        list.appendChild(item);
      });
      list.hidden = !hits.length;
      status.textContent = hits.length ? (hits.length > SEARCH_LIMIT ? "first " + SEARCH_LIMIT + " of " : "") + hits.length +
        (hits.length === 1 ? " result" : " results") : "nothing found";
    }

    form.hidden = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var first = list.querySelector("a");
      if (first) location.href = first.href;
    });
    input.addEventListener("focus", load);
    input.addEventListener("input", load);
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { input.value = ""; run(); }
    });
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
    initSearch();
    showToday();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
