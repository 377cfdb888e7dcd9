// evq dashboard: local times, "select all", and the live refresh of <main>.
// No inline script anywhere (the Content-Security-Policy forbids it); all HTML comes escaped
// from the server.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (node) {
      var moment = new Date(node.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        node.textContent = moment.toLocaleString();
      }
    });
  }

  function selectAll(root) {
    root.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var form = box.closest("form") || document;
        form.querySelectorAll('input[name="ids"]').forEach(function (item) {
          item.checked = box.checked;
        });
      });
    });
  }

  function prepare(root) {
    localTimes(root);
    selectAll(root);
  }

  function banner(text) {
    var node = document.getElementById("banner");
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function busy(main) {
    // Never pull the page from under a person choosing or typing.
    if (main.querySelector('input[name="ids"]:checked')) return true;
    var active = document.activeElement;
    return !!(active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName));
  }

  function live(main) {
    var every = parseInt(main.getAttribute("data-live") || "0", 10);
    if (!every) return;
    function tick() {
      if (document.hidden || busy(main)) {
        window.setTimeout(tick, every);
        return;
      }
      fetch(window.location.href, {
        headers: { "X-Evq-Live": "1" },
        credentials: "same-origin",
        cache: "no-store",
      })
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload();
            return null;
          }
          return response.text().then(function (html) {
            banner("");
            main.innerHTML = html;
            document.body.classList.toggle("outage", response.status === 503);
            prepare(main);
          });
        })
        .catch(function () {
          banner("The dashboard is unreachable: retrying…");
        })
        .finally(function () {
          window.setTimeout(tick, every);
        });
    }
    window.setTimeout(tick, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    prepare(document);
    var main = document.getElementById("main");
    if (main) live(main);
  });
})();
