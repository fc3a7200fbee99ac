// digest web pages: small enhancements over forms that work without JavaScript.
//  - fill the time zone from the browser on the subscribe form,
//  - show the weekday only for weekly digests,
//  - a live "what you would get today" list while keywords are typed (GET /api/rank).
// Content from the server is put in with textContent only, never as HTML.
(function () {
  "use strict";

  function fillTimezone() {
    var select = document.querySelector("select[data-autodetect]");
    if (!select || !window.Intl || !Intl.DateTimeFormat) return;
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    if (!zone || zone.length > 64) return;
    var found = Array.prototype.some.call(select.options, function (o) { return o.value === zone; });
    if (!found) {
      var option = document.createElement("option");
      option.value = zone;
      option.textContent = zone.replace(/_/g, " ");
      select.insertBefore(option, select.firstChild);
    }
    select.value = zone;
  }

  function weeklyToggle(form) {
    var fields = form.querySelectorAll("[data-weekly-only]");
    var radios = form.querySelectorAll("input[name=frequency]");
    if (!fields.length || !radios.length) return;
    function update() {
      var weekly = form.querySelector("input[name=frequency]:checked");
      var show = weekly && weekly.value === "weekly";
      Array.prototype.forEach.call(fields, function (f) { f.hidden = !show; });
    }
    Array.prototype.forEach.call(radios, function (r) { r.addEventListener("change", update); });
    update();
  }

  function safeHref(url) {
    try {
      var u = new URL(url, window.location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) { return null; }
  }

  function paperItem(p) {
    var li = document.createElement("li");
    li.className = "paper";
    var href = p.url ? safeHref(p.url) : null;
    var title = document.createElement(href ? "a" : "span");
    title.className = "paper-title";
    title.textContent = p.title;
    if (href) { title.href = href; title.rel = "noopener noreferrer"; }
    li.appendChild(title);
    var meta = document.createElement("span");
    meta.className = "paper-meta";
    meta.textContent = p.authors || "";
    if (p.upvotes) {
      var votes = document.createElement("span");
      votes.className = "votes";
      votes.textContent = "\u25B2 " + p.upvotes;
      meta.appendChild(votes);
    }
    li.appendChild(meta);
    if (p.reason) {
      var reason = document.createElement("span");
      reason.className = "paper-reason";
      reason.textContent = p.reason;
      li.appendChild(reason);
    }
    return li;
  }

  function liveRank(form) {
    var panel = document.querySelector("[data-live-panel]");
    var keywords = form.querySelector("[data-keywords]");
    if (!panel || !keywords || !window.fetch) return;
    var exclude = form.querySelector("[data-exclude]");
    var limit = form.querySelector("[data-limit]");
    var list = panel.querySelector("[data-live-list]");
    var status = panel.querySelector("[data-live-status]");
    var heading = panel.querySelector("[data-live-heading]");
    var empty = panel.querySelector("[data-live-empty]");
    var root = form.getAttribute("data-root") || "";
    var original = {
      items: Array.prototype.slice.call(list.children),
      status: status ? status.textContent : "",
      empty: empty ? !empty.hidden : false
    };
    if (!empty) {
      empty = document.createElement("p");
      empty.className = "empty";
      empty.hidden = true;
      list.parentNode.insertBefore(empty, list.nextSibling);
    }
    var timer = null;
    var controller = null;
    var last = null;

    function restore() {
      list.replaceChildren.apply(list, original.items);
      if (status) status.textContent = original.status;
      if (heading) heading.textContent = heading.getAttribute("data-default");
      empty.hidden = !original.empty;
      panel.classList.remove("loading");
    }

    function show(data) {
      list.replaceChildren.apply(list, data.papers.map(paperItem));
      if (heading && heading.hasAttribute("data-live")) heading.textContent = heading.getAttribute("data-live");
      if (status) {
        status.textContent = data.label + " \u00B7 " + data.papers.length + " of " + data.total +
          " new paper" + (data.total === 1 ? "" : "s") + " match";
      }
      empty.textContent = "Nothing in today\u2019s papers matches these keywords.";
      empty.hidden = data.papers.length > 0;
      panel.classList.remove("loading");
    }

    // The field's maxlength is the server's limit: longer text would only get a 400.
    function bounded(field) {
      return field.maxLength > 0 ? field.value.slice(0, field.maxLength) : field.value;
    }

    function run() {
      var query = new URLSearchParams({
        keywords: bounded(keywords),
        exclude: exclude ? bounded(exclude) : "",
        limit: limit && /^\d{1,4}$/.test(limit.value) && +limit.value >= 1 && +limit.value <= +limit.max ? limit.value : "10"
      }).toString();
      if (query === last) return;
      last = query;
      if (!keywords.value.trim() && heading && heading.hasAttribute("data-default")) {
        if (controller) controller.abort();
        restore();
        return;
      }
      if (controller) controller.abort();
      controller = window.AbortController ? new AbortController() : null;
      panel.classList.add("loading");
      fetch(root + "/api/rank?" + query, {
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
        signal: controller ? controller.signal : undefined
      }).then(function (r) {
        if (!r.ok) throw new Error(r.status === 429 ? "busy" : "HTTP " + r.status);
        return r.json();
      }).then(show).catch(function (e) {
        if (e && e.name === "AbortError") return;
        panel.classList.remove("loading");
        last = null;  // the same keywords may be asked again
        if (status) {
          status.textContent = e && e.message === "busy"
            ? "The list takes a short break: it follows your keywords again in a moment."
            : "Could not update the list just now.";
        }
      });
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(run, 350);
    }
    [keywords, exclude, limit].forEach(function (el) {
      if (el) el.addEventListener("input", schedule);
    });
  }

  function init() {
    fillTimezone();
    Array.prototype.forEach.call(document.querySelectorAll("form[data-live-rank]"), function (form) {
      weeklyToggle(form);
      liveRank(form);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
