// skyrun run pages: keep live views current without reloading.
//
// A `[data-live-src]` region holds one server-rendered element; while that element says
// data-live="1", the region fetches its fragment again and swaps it in, keeping what the reader
// opened, closed or scrolled. Everything shown is rendered by the server's templates.
"use strict";

(() => {
  const userOpen = new Map(); // details key -> open, only after the reader toggled it
  const scrolledUp = new Map(); // log key -> true while the reader scrolled away from the end
  const MAX_DELAY_MS = 30000;

  function localTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) continue;
      el.title = el.textContent.trim();
      const format = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
      if (when.getFullYear() !== new Date().getFullYear()) format.year = "numeric";
      el.textContent = when.toLocaleString(undefined, format);
    }
  }

  function restoreOpen(root) {
    for (const details of root.querySelectorAll("details[data-key]")) {
      const open = userOpen.get(details.dataset.key);
      if (open !== undefined) details.open = open;
    }
  }

  function followLogs(root) {
    for (const pre of root.querySelectorAll("pre.log[data-key]")) {
      const key = pre.dataset.key;
      if (!scrolledUp.get(key)) pre.scrollTop = pre.scrollHeight;
      pre.addEventListener("scroll", () => {
        scrolledUp.set(key, pre.scrollTop + pre.clientHeight < pre.scrollHeight - 8);
      }, { passive: true });
    }
  }

  function enhance(root) {
    restoreOpen(root);
    localTimes(root);
    followLogs(root);
  }

  function follow(region) {
    const src = region.dataset.liveSrc;
    const every = Number(region.dataset.pollMs) || 2000;
    let delay = every;

    async function tick() {
      const current = region.firstElementChild;
      if (!current || current.dataset.live !== "1") return;
      if (!document.hidden) {
        try {
          const response = await fetch(src, {
            headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin",
          });
          if (response.status === 404) return; // the run is gone: nothing more will come
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          const doc = new DOMParser().parseFromString(await response.text(), "text/html");
          const next = doc.body.firstElementChild;
          if (!next) throw new Error("empty fragment");
          restoreOpen(next);
          region.replaceChildren(next);
          enhance(next);
          if (next.dataset.title) document.title = next.dataset.title;
          region.classList.remove("stale");
          delay = every;
        } catch (err) {
          region.classList.add("stale");
          delay = Math.min(delay * 2, MAX_DELAY_MS);
        }
      }
      setTimeout(tick, delay);
    }

    setTimeout(tick, every);
  }

  document.addEventListener("click", (event) => {
    const summary = event.target.closest("summary");
    const details = summary && summary.parentElement;
    if (details && details.dataset.key) userOpen.set(details.dataset.key, !details.open);
  });

  enhance(document);
  for (const region of document.querySelectorAll("[data-live-src]")) follow(region);
})();
