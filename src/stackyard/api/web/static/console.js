// Stackyard console: confirmations, live fragments and followed logs. No framework, no CDN.
"use strict";

function toLogin() {
  window.location.href = "/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
}

// Ask before a form that changes something is sent (approve, promote, roll back, ...).
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : "";
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// After a form was handled, show the page's own address, so a reload does not post again.
function replaceHistory() {
  const canonical = document.body.dataset.canonical;
  if (canonical) {
    window.history.replaceState(null, "", canonical);
  }
}

// Poll an HTML fragment and swap it in: [data-live=url][data-interval=ms].
function followFragment(element) {
  const url = element.dataset.live;
  const interval = Number(element.dataset.interval || 2000);
  let last = element.innerHTML;
  async function tick() {
    if (!document.hidden) {
      try {
        const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (response.status === 401) {
          toLogin();
          return;
        }
        if (response.ok) {
          const html = await response.text();
          if (html !== last) {
            element.innerHTML = html;
            last = html;
          }
          element.dataset.refreshed = String(Date.now());
        }
      } catch (error) {
        // The server restarts or the network blinks: try again at the next tick.
      }
    }
    window.setTimeout(tick, interval);
  }
  window.setTimeout(tick, interval);
}

// Follow a log with server-sent events: [data-stream=url] gets each line as it comes.
function followLog(element) {
  const state = document.getElementById("log-state");
  const source = new EventSource(element.dataset.stream);
  function show(text, kind) {
    if (state) {
      state.textContent = text;
      state.className = "badge " + kind;
    }
    element.dataset.state = text;
  }
  source.addEventListener("open", () => show("following", "busy"));
  source.addEventListener("line", (event) => {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    element.appendChild(document.createTextNode(JSON.parse(event.data) + "\n"));
    if (atBottom) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  });
  source.addEventListener("end", () => {
    source.close(); // or EventSource would reconnect and replay the log
    show("finished", "ok");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      show("disconnected: reload, or log in again", "bad");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  replaceHistory();
  document.querySelectorAll("[data-live]").forEach(followFragment);
  document.querySelectorAll("[data-stream]").forEach(followLog);
});
