// Keeps the status page fresh: every 2 s it fetches `status.html` (the same document as
// /status, rendered and escaped by the gateway) and puts it in place of <main>. No framework,
// nothing to build. Without JavaScript the page reloads itself every 10 s instead (<noscript>).
"use strict";
(() => {
  const INTERVAL = 2000; // ms between refreshes
  const main = document.getElementById("live");
  const note = document.getElementById("refresh");
  if (!main || !note) return;

  async function refresh() {
    try {
      const response = await fetch("status.html", { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      main.innerHTML = await response.text(); // the gateway escaped every value in it
      document.body.classList.remove("stale");
      note.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      document.body.classList.add("stale");
      note.textContent = `the gateway is not answering (${error.message}); retrying`;
    } finally {
      setTimeout(refresh, INTERVAL);
    }
  }
  setTimeout(refresh, INTERVAL);
})();
