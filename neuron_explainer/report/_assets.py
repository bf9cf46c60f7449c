"""The report's inline stylesheet and script, and a Content-Security-Policy that allows only them.

The policy (``default-src 'none'``, the style and the script allowed by their SHA-256 hashes)
makes the browser refuse any external resource, and any script or style a bad token might
smuggle in, so the page provably works from ``file://`` with nothing else.
"""

from __future__ import annotations

import base64
import hashlib

from neuron_explainer.report._tokens import LEVELS

__all__ = ["CSP", "SCRIPT", "STYLE"]

_TRUE_RGB = (34, 197, 94)  # green: the unit's true activation
_SIM_RGB = (59, 130, 246)  # blue: the simulator's prediction
_NEG_RGB = (239, 68, 68)  # red: negative values, either row


def _levels(prefix: str, rgb: tuple[int, int, int], top_alpha: float) -> str:
    r, g, b = rgb
    return "".join(
        f".{prefix}{level}{{background:rgba({r},{g},{b},{top_alpha * level / LEVELS:.3f})}}"
        for level in range(1, LEVELS + 1)
    )


STYLE = (
    """
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 24px 64px}
h1{font-size:24px;margin:0 0 2px}
h2{font-size:18px;margin:32px 0 10px}
a{color:#0969da}
.sub,.dim{color:#57606a}
.sub{margin:0 0 18px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 18px}
.overview{display:grid;grid-template-columns:minmax(260px,1fr) minmax(320px,2fr);gap:16px}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:14px 12px;
margin:0;align-content:start}
.stats dt{color:#57606a;font-size:11.5px;text-transform:uppercase;letter-spacing:.04em}
.stats dd{margin:1px 0 0;font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.stats dd.small{font-size:13px;font-weight:400}
.components{margin:14px 0 0;font-size:13px;color:#57606a}
.hist{display:block;width:100%;height:auto}
.hist .bar{fill:#2f81f7}.hist .bar:hover{fill:#0550ae}
.hist .bar.undef{fill:#8c959f}
.hist .axis{stroke:#8c959f}.hist .grid{stroke:#eaeef2}
.hist .mean{stroke:#cf222e;stroke-dasharray:4 3}
.hist text{font-size:11px;fill:#57606a}.hist .meanlabel{fill:#cf222e}
.tools{display:flex;gap:8px;align-items:center;margin:0 0 8px;flex-wrap:wrap}
.tools input{flex:1 1 260px;max-width:420px;padding:5px 8px;border:1px solid #d0d7de;
border-radius:6px;font:inherit}
.tools button{padding:5px 10px;border:1px solid #d0d7de;border-radius:6px;background:#fff;
font:inherit;cursor:pointer}
.tablewrap{max-height:70vh;overflow:auto;border:1px solid #d0d7de;border-radius:8px;
background:#fff}
table.units{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
.units th,.units td{padding:5px 10px;border-bottom:1px solid #eaeef2;text-align:left;
vertical-align:top}
.units thead th{position:sticky;top:0;background:#f6f8fa;z-index:1;
border-bottom:1px solid #d0d7de;white-space:nowrap}
.units th button{all:unset;cursor:pointer;font-weight:600}
.units th button:focus-visible{outline:2px solid #0969da}
.units th[aria-sort=ascending] button::after{content:" \\25B2";font-size:9px}
.units th[aria-sort=descending] button::after{content:" \\25BC";font-size:9px}
.units td.n{text-align:right;white-space:nowrap}
.units th.n{text-align:right}
.units td.ex{min-width:280px;unicode-bidi:isolate}
.units tbody tr:hover{background:#f6f8fa}
.one-model .c-model,.no-usage .c-usage{display:none}
.num{font-variant-numeric:tabular-nums}
.undef{color:#9a6700;font-style:italic;cursor:help}
.reason{color:#57606a;font-size:12px}
details.unit{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:0 0 8px}
details.unit>summary{display:flex;gap:12px;align-items:baseline;padding:8px 14px;
cursor:pointer;list-style:none}
details.unit>summary::-webkit-details-marker{display:none}
details.unit>summary::before{content:"\\25B8";color:#57606a;width:10px;flex:none}
details.unit[open]>summary::before{content:"\\25BE"}
details.unit[open]>summary{border-bottom:1px solid #eaeef2}
.uname{font-weight:600;white-space:nowrap}
.model{color:#57606a;font-size:12px;white-space:nowrap}
summary .num,summary .undef{font-weight:600;white-space:nowrap;min-width:52px}
.sx{color:#57606a;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;min-width:0;
unicode-bidi:isolate}
.body{padding:12px 16px 16px}
.expl{font-size:16px;margin:0 0 12px;white-space:pre-wrap;unicode-bidi:isolate}
.cols{display:flex;flex-wrap:wrap;gap:8px 56px}
table.kv{border-collapse:collapse;font-size:13px;align-self:start;max-width:560px}
.kv th{text-align:left;font-weight:400;color:#57606a;padding:2px 14px 2px 0;vertical-align:top;
white-space:nowrap}
.kv td{padding:2px 0;overflow-wrap:anywhere}
.legend{font-size:12.5px;color:#57606a;margin:14px 0 8px}
.excerpt{margin:0 0 10px;padding:8px 10px;border:1px solid #eaeef2;border-radius:6px}
.excerpt-head{font-size:12px;color:#57606a;margin:0 0 4px}
.src{font-weight:600;text-transform:uppercase;font-size:11px;letter-spacing:.04em}
.src.top{color:#1a7f37}.src.random{color:#8250df}
.toks{line-height:1.25;font-size:13.5px}
.k{display:inline-flex;flex-direction:column;vertical-align:top;margin:0 0 5px}
.k i{font-style:normal;white-space:pre;unicode-bidi:isolate;min-height:1.25em}
.k i:first-child{border-bottom:1px solid #fff}
.k:hover i{outline:1px solid #57606a}
.k.lab i{color:#57606a;font-size:10.5px;padding-right:6px;line-height:1.6;outline:none}
.c{color:#6639ba;font-weight:600}
.failures td.why{white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate}
.none{color:#57606a;font-style:italic}
footer{margin-top:32px;color:#57606a;font-size:12px}
"""
    + _levels("a", _TRUE_RGB, 0.85)
    + _levels("s", _SIM_RGB, 0.75)
    + _levels("n", _NEG_RGB, 0.75)
    + "\n"
)
"""The page's stylesheet: ``a1``-``a10`` shade true activations, ``s1``-``s10`` simulations,
``n1``-``n10`` negative values."""

SCRIPT = (
    """
(function () {
  "use strict";
  var LEVELS = """
    + str(LEVELS)
    + r""";
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
  var draw = function (details) {
    if (details.hasAttribute("data-drawn")) { return; }
    details.setAttribute("data-drawn", "");
    var block = details.querySelector("script.tokens");
    if (!block) { return; }
    var data = JSON.parse(block.textContent);
    var boxes = details.querySelectorAll(".toks");
    data.rows.forEach(function (row, i) { if (boxes[i]) { drawRow(boxes[i], row, data.scale); } });
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
  var openFromHash = function () {
    var id = "";
    try { id = decodeURIComponent(location.hash.slice(1)); } catch (e) { return; }
    var target = id ? document.getElementById(id) : null;
    if (target && target.tagName === "DETAILS" && !target.open) {
      target.open = true;
      target.scrollIntoView();
    }
  };
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
})();
"""
)
"""The page's script: sortable table, row filter, expand/collapse all, open the linked unit,
draw a unit's shaded excerpts when it is first opened."""


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CSP = (
    f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
"""Content-Security-Policy of the page: only its own inline style and script run."""
