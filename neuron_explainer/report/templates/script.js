
(function () {
  "use strict";
  var LEVELS = ${levels};
  var table = document.getElementById("units");
  if (table && table.tBodies.length) {
    var body = table.tBodies[0];
    var heads = table.tHead.rows[0].cells;
    var key = function (row, col, numeric) {
      var cell = row.cells[col];
      var value = cell.getAttribute("data-v");
      if (value === null) { value = cell.textContent; }
      if (!numeric) { return value.toLowerCase(); }
      var number = parseFloat(value);
      return isNaN(number) ? null : number;
    };
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var current = th.getAttribute("aria-sort");
        var ascending = current === "ascending" ? false :
          current === "descending" ? true : !numeric;
        Array.prototype.forEach.call(heads, function (h) {
          if (h.hasAttribute("aria-sort")) { h.setAttribute("aria-sort", "none"); }
        });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var keyed = Array.prototype.map.call(body.rows, function (row) {
          return [key(row, col, numeric), Number(row.getAttribute("data-i")), row];
        });
        keyed.sort(function (a, b) {
          if (a[0] === b[0]) { return a[1] - b[1]; }
          if (a[0] === null) { return 1; }
          if (b[0] === null) { return -1; }
          var order = a[0] < b[0] ? -1 : 1;
          return ascending ? order : -order;
        });
        var fragment = document.createDocumentFragment();
        keyed.forEach(function (k) { fragment.appendChild(k[2]); });
        body.appendChild(fragment);
      });
    });
    var filter = document.getElementById("filter");
    if (filter) {
      filter.addEventListener("input", function () {
        var query = filter.value.toLowerCase();
        Array.prototype.forEach.call(body.rows, function (row) {
          row.hidden = query !== "" && row.textContent.toLowerCase().indexOf(query) < 0;
        });
      });
    }
  }
  // Excerpts are drawn when their unit is first opened, from the unit's JSON data block, with
  // textContent only: a token is always text, never markup.
  var SYMBOLS = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"};
  // What Python's str.isprintable() rejects: control, format, surrogate, private, unassigned,
  // line/paragraph separators and every space separator but " ".
  var HIDDEN = new RegExp("[\\p{Cc}\\p{Cf}\\p{Cs}\\p{Co}\\p{Cn}\\p{Zl}\\p{Zp}" +
    "\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000]", "u");
  var hex = function (code, width) {
    var digits = code.toString(16);
    while (digits.length < width) { digits = "0" + digits; }
    return digits;
  };
  var marker = function (parent, text) {
    var span = document.createElement("span");
    span.className = "c";
    span.textContent = text;
    parent.appendChild(span);
  };
  var appendToken = function (parent, token) {
    if (token === "") { marker(parent, "\u2205"); return; }
    if (!HIDDEN.test(token)) { parent.appendChild(document.createTextNode(token)); return; }
    var plain = "";
    for (var ch of token) {
      if (!HIDDEN.test(ch)) { plain += ch; continue; }
      if (plain) { parent.appendChild(document.createTextNode(plain)); plain = ""; }
      var code = ch.codePointAt(0);
      marker(parent, SYMBOLS[ch] || (code < 0x100 ? "\\x" + hex(code, 2) :
        code < 0x10000 ? "\\u" + hex(code, 4) : "\\U" + hex(code, 8)));
    }
    if (plain) { parent.appendChild(document.createTextNode(plain)); }
  };
  var shade = function (value, scale, prefix) {
    if (!(scale > 0)) { return ""; }
    var level = Math.min(LEVELS, Math.floor(Math.abs(value) / scale * LEVELS + 0.5));
    return level === 0 ? "" : (value > 0 ? prefix : "n") + level;
  };
  var drawRow = function (box, row, scale) {
    var tokens = row[0], acts = row[1], sims = row[2], cals = row[3];
    var fragment = document.createDocumentFragment();
    var label = document.createElement("span");
    label.className = "k lab";
    ["true", "sim"].forEach(function (name) {
      var i = document.createElement("i");
      i.textContent = name;
      label.appendChild(i);
    });
    fragment.appendChild(label);
    tokens.forEach(function (token, t) {
      var k = document.createElement("span");
      k.className = "k";
      k.title = "act " + acts[t] + " \u00b7 sim " + sims[t] + row[5] + " \u00b7 cal " + cals[t];
      var truth = document.createElement("i");
      var sim = document.createElement("i");
      truth.className = shade(acts[t], scale, "a");
      sim.className = shade(sims[t], row[4], "s");
      appendToken(truth, token);
      appendToken(sim, token);
      k.appendChild(truth);
      k.appendChild(sim);
      fragment.appendChild(k);
    });
    box.appendChild(fragment);
  };
  // A judged excerpt (detection, fuzzing): one row, the true activation; the tokens shown to
  // the judge highlighted (row[2], their positions) are marked.
  var drawJudged = function (box, row, scale) {
    var tokens = row[0], acts = row[1], marked = {};
    row[2].forEach(function (t) { marked[t] = true; });
    var fragment = document.createDocumentFragment();
    tokens.forEach(function (token, t) {
      var k = document.createElement("span");
      k.className = marked[t] ? "k hl" : "k";
      k.title = "act " + acts[t] + (marked[t] ? " \u00b7 highlighted" : "");
      var truth = document.createElement("i");
      truth.className = shade(acts[t], scale, "a");
      appendToken(truth, token);
      k.appendChild(truth);
      fragment.appendChild(k);
    });
    box.appendChild(fragment);
  };
  var drawBlock = function (block, boxes, drawOne) {
    var data = JSON.parse(block.textContent);
    data.rows.forEach(function (row, i) { if (boxes[i]) { drawOne(boxes[i], row, data.scale); } });
  };
  var draw = function (details) {
    if (details.hasAttribute("data-drawn")) { return; }
    details.setAttribute("data-drawn", "");
    var block = details.querySelector("script.tokens");
    if (block) { drawBlock(block, details.querySelectorAll(".toks"), drawRow); }
    // Each scorer's judged excerpts: its data block sits beside its boxes.
    Array.prototype.forEach.call(details.querySelectorAll("script.judged"), function (judged) {
      drawBlock(judged, judged.parentNode.querySelectorAll(".jtoks"), drawJudged);
    });
  };
  document.addEventListener("toggle", function (event) {
    var target = event.target;
    if (target.open && target.classList && target.classList.contains("unit")) { draw(target); }
  }, true);
  Array.prototype.forEach.call(document.querySelectorAll("details.unit[open]"), draw);
  var setAll = function (open) {
    Array.prototype.forEach.call(document.querySelectorAll("details.unit"), function (d) {
      d.open = open;
    });
  };
  var expand = document.getElementById("expand-all");
  var collapse = document.getElementById("collapse-all");
  if (expand) { expand.addEventListener("click", function () { setAll(true); }); }
  if (collapse) { collapse.addEventListener("click", function () { setAll(false); }); }
  // A page opened at a link into it (report.html#u-...) scrolls inside <body>, not the window,
  // so the document itself stays at its top: tools that capture the rectangle at the top of
  // the document whatever the scroll (chromium --screenshot does) then show the linked unit;
  // with the window scrolled to it they captured an area that was never painted (blank). The
  // body takes the keyboard focus, so the keys that scroll a page scroll it.
  var scrollInsideBody = function () {
    document.documentElement.classList.add("at-link");
    window.scrollTo(0, 0);
    document.body.tabIndex = -1;
    window.addEventListener("load", function () {
      if (document.activeElement === document.body) {
        document.body.focus({preventScroll: true});
      }
    });
  };
  var openFromHash = function (atLoad) {
    var id = "";
    try { id = decodeURIComponent(location.hash.slice(1)); } catch (e) { return; }
    var target = id ? document.getElementById(id) : null;
    if (!target) { return; }
    if (atLoad === true) { scrollInsideBody(); }
    if (target.tagName === "DETAILS" && !target.open) {
      target.open = true;
      draw(target);  // now, not on the toggle event: the unit is whole when scrolled to
    } else if (atLoad !== true) {
      return;  // the browser scrolls to a target that needs no opening
    }
    target.scrollIntoView();
  };
  window.addEventListener("hashchange", function () { openFromHash(false); });
  openFromHash(true);
})();
