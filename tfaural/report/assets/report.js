/*
 * tfaural listening report: filters, ordering and one-player-at-a-time.
 *
 * Plain ES5 in a classic (non-module) script so that it also runs from file://.
 * Everything works without it: the filter forms are hidden (class "js-only")
 * and every feature card is visible.
 *
 * A form.filters[data-filter-scope=ID] filters the [data-filter-item] elements
 * inside #ID by their data-layer, data-feature, data-silent and data-name
 * attributes, hides [data-filter-group] elements left empty, reorders the
 * children of [data-sort-container] (by data-strength, strongest first, or back
 * to data-position) and announces the count in [data-filter-count]
 * (an aria-live region).
 */
(function () {
  "use strict";

  var root = document.documentElement;
  root.classList.remove("no-js");
  root.classList.add("js");

  /** Parses "9, 12-15" into a predicate over integers; null for empty text; undefined when invalid. */
  function parseNumbers(text) {
    var cleaned = text.replace(/\s+/g, "");
    if (cleaned === "") {
      return null;
    }
    var ranges = [];
    var parts = cleaned.split(",");
    for (var i = 0; i < parts.length; i++) {
      if (parts[i] === "") {
        continue;
      }
      var match = /^(\d+)(?:-(\d+))?$/.exec(parts[i]);
      if (!match) {
        return undefined;
      }
      var low = parseInt(match[1], 10);
      var high = match[2] === undefined ? low : parseInt(match[2], 10);
      ranges.push(low <= high ? [low, high] : [high, low]);
    }
    return function (n) {
      for (var j = 0; j < ranges.length; j++) {
        if (n >= ranges[j][0] && n <= ranges[j][1]) {
          return true;
        }
      }
      return false;
    };
  }

  function numberOr(value, fallback) {
    var n = parseFloat(value);
    return isNaN(n) ? fallback : n;
  }

  function orderItems(scope, order) {
    var containers = scope.querySelectorAll("[data-sort-container]");
    for (var c = 0; c < containers.length; c++) {
      var container = containers[c];
      var children = Array.prototype.slice.call(container.children);
      children.sort(function (a, b) {
        if (order === "strength") {
          var diff = numberOr(b.getAttribute("data-strength"), -Infinity) -
            numberOr(a.getAttribute("data-strength"), -Infinity);
          if (diff !== 0 && !isNaN(diff)) {
            return diff;
          }
        }
        return numberOr(a.getAttribute("data-position"), 0) - numberOr(b.getAttribute("data-position"), 0);
      });
      for (var k = 0; k < children.length; k++) {
        container.appendChild(children[k]);
      }
    }
  }

  function setUpFilters(form) {
    var scope = document.getElementById(form.getAttribute("data-filter-scope")) || document.body;
    var items = scope.querySelectorAll("[data-filter-item]");
    var groups = scope.querySelectorAll("[data-filter-group]");
    var count = form.querySelector("[data-filter-count]");
    var noun = form.getAttribute("data-filter-noun") || "items";
    var featureInput = form.querySelector("input[name='feature']");
    var featureError = form.querySelector("[data-feature-error]");
    var searchInput = form.querySelector("input[name='q']");
    var silentInput = form.querySelector("input[name='hide-silent']");
    var orderSelect = form.querySelector("select[name='order']");

    function apply() {
      var layers = {};
      var layerBoxes = form.querySelectorAll("input[name='layer']");
      for (var i = 0; i < layerBoxes.length; i++) {
        layers[layerBoxes[i].value] = layerBoxes[i].checked;
      }
      var featureTest = featureInput ? parseNumbers(featureInput.value) : null;
      if (featureInput) {
        var invalid = featureTest === undefined;
        featureInput.setAttribute("aria-invalid", invalid ? "true" : "false");
        if (featureError) {
          featureError.hidden = !invalid;
        }
        if (invalid) {
          featureTest = null;
        }
      }
      var query = searchInput ? searchInput.value.trim().toLowerCase() : "";
      var hideSilent = silentInput ? silentInput.checked : false;

      var shown = 0;
      for (var n = 0; n < items.length; n++) {
        var item = items[n];
        var layer = item.getAttribute("data-layer");
        var feature = item.getAttribute("data-feature");
        var visible = true;
        if (layer !== null && layers.hasOwnProperty(layer) && !layers[layer]) {
          visible = false;
        }
        if (visible && featureTest && feature !== null && !featureTest(parseInt(feature, 10))) {
          visible = false;
        }
        if (visible && hideSilent && item.getAttribute("data-silent") === "true") {
          visible = false;
        }
        if (visible && query && (item.getAttribute("data-name") || "").indexOf(query) === -1) {
          visible = false;
        }
        item.hidden = !visible;
        if (visible) {
          shown += 1;
        }
      }
      for (var g = 0; g < groups.length; g++) {
        groups[g].hidden = groups[g].querySelector("[data-filter-item]:not([hidden])") === null;
      }
      if (orderSelect) {
        orderItems(scope, orderSelect.value);
      }
      if (count) {
        count.textContent = "Showing " + shown + " of " + items.length + " " + noun;
      }
    }

    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      apply();
    });
    form.addEventListener("reset", function () {
      window.setTimeout(apply, 0); // the reset values are in place only after the event
    });
    apply();
  }

  /** Pauses every other player when one starts: hundreds of players, one sound at a time. */
  function oneAtATime() {
    document.addEventListener("play", function (event) {
      var players = document.querySelectorAll("audio");
      for (var i = 0; i < players.length; i++) {
        if (players[i] !== event.target && !players[i].paused) {
          players[i].pause();
        }
      }
    }, true);
  }

  function init() {
    var forms = document.querySelectorAll("form.filters");
    for (var i = 0; i < forms.length; i++) {
      setUpFilters(forms[i]);
    }
    oneAtATime();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
