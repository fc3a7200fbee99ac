// digest web pages: small enhancements over forms that work without JavaScript.
//  - fill the time zone from the browser on the subscribe form,
//  - show the weekday only for weekly digests,
//  - a live "what you would get today" list while keywords are typed (GET /api/rank), with a
//    short summary under the keywords field (the list itself is far below it on a phone),
//  - focus on the error summary of a form that came back with errors.
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
      var mark = document.createElement("span");
      mark.setAttribute("aria-hidden", "true");
      mark.textContent = "\u25B2";
      var spoken = document.createElement("span");
      spoken.className = "visually-hidden";
      spoken.textContent = " upvotes";
      votes.append(mark, " " + p.upvotes, spoken);
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
    var summary = form.querySelector("[data-live-summary]");
    var count = summary && summary.querySelector("[data-live-count]");
    var extra = summary && summary.querySelector("[data-live-extra]");
    var top = summary && summary.querySelector("[data-live-top]");
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

    // The summary under the keywords: its count is the page's live region, read out as the
    // list changes; the first few titles show only while there are some.
    function summarise(text, papers) {
      if (!count) return;
      count.textContent = text;
      top.replaceChildren.apply(top, papers.slice(0, 3).map(function (p) {
        var li = document.createElement("li");
        li.textContent = p.title;
        return li;
      }));
      extra.hidden = papers.length === 0;
      keepInView();
    }

    // On a phone the summary may land under the fold (or the on-screen keyboard) as it
    // grows: scroll just enough to show it, never so far that the field leaves the screen.
    function keepInView() {
      if (document.activeElement !== keywords || extra.hidden || extra.offsetParent === null) return;
      var view = window.visualViewport;
      var bottom = view ? view.offsetTop + view.height : window.innerHeight;
      var by = Math.min(
        summary.getBoundingClientRect().bottom + 8 - bottom,
        keywords.getBoundingClientRect().top - 8
      );
      if (by > 0) window.scrollBy(0, by);
    }

    function restore() {
      summarise("", []);
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
      summarise(
        data.papers.length
          ? data.papers.length + " of today\u2019s " + data.total + " new paper" +
            (data.total === 1 ? "" : "s") + " match" + (data.papers.length > 3 ? "; the top 3:" : ":")
          : "None of today\u2019s " + data.total + " new paper" + (data.total === 1 ? "" : "s") +
            " match these keywords.",
        data.papers
      );
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
        var message = e && e.message === "busy"
          ? "The list takes a short break: it follows your keywords again in a moment."
          : "Could not update the list just now.";
        if (status) status.textContent = message;
        summarise(message, []);
      });
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(run, 350);
    }
    [keywords, exclude, limit].forEach(function (el) {
      if (el) el.addEventListener("input", schedule);
    });
    // The subscribe form back with an error keeps its keywords: show what they pick. (The
    // preferences page comes with its picks already.)
    if (keywords.value.trim() && heading && heading.hasAttribute("data-default")) run();
  }

  // A form that came back with errors: focus its summary (a screen reader reads it out), and
  // let each of its links put the focus in its field, not only scroll there.
  function errorSummary() {
    var summary = document.querySelector("[data-error-summary]");
    if (!summary) return;
    summary.focus();
    summary.addEventListener("click", function (e) {
      var a = e.target.closest && e.target.closest("a[href^='#']");
      var field = a && document.getElementById(a.getAttribute("href").slice(1));
      if (!field) return;
      e.preventDefault();
      field.focus();
    });
  }

  function init() {
    fillTimezone();
    errorSummary();
    Array.prototype.forEach.call(document.querySelectorAll("form[data-live-rank]"), function (form) {
      weeklyToggle(form);
      liveRank(form);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
