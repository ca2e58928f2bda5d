// syncstore's web interface: live updates, drag-and-drop uploads with progress, confirmations.
// Everything works without it; this only makes it nicer.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Live updates: the server sends a "change" event whenever the user's files change (on any
  // device); the page fetches itself again and swaps in its live part.
  const live = document.getElementById("live");
  if (live && window.EventSource) {
    let pending = null;
    const refresh = async () => {
      pending = null;
      try {
        const response = await fetch(location.href, { headers: { "X-Requested-With": "fetch" } });
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = doc.getElementById("live");
        if (fresh) {
          live.innerHTML = fresh.innerHTML;
          document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        }
      } catch (err) {
        console.warn("live update failed", err);
      }
    };
    const events = new EventSource("/events");
    events.addEventListener("change", () => {
      if (!pending) pending = setTimeout(refresh, 150);
    });
    events.addEventListener("open", () => { document.body.dataset.live = "connected"; });
  }

  // Uploads: the form posts by itself without script; with it, files dropped anywhere on the
  // page (or picked) go up one request per file with a progress bar.
  const form = document.getElementById("upload");
  if (form) {
    const progress = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const dir = form.querySelector('input[name="dir"]').value;
    const send = (file) => new Promise((resolve, reject) => {
      const data = new FormData();
      data.append("csrf", csrf());
      data.append("dir", dir);
      data.append("file", file, file.name);
      const request = new XMLHttpRequest();
      request.open("POST", "/upload");
      request.setRequestHeader("X-Requested-With", "fetch");
      request.upload.onprogress = (event) => {
        if (event.lengthComputable) progress.value = Math.round((100 * event.loaded) / event.total);
      };
      request.onload = () => (request.status === 200 ? resolve() : reject(new Error(request.responseText.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim() || request.statusText)));
      request.onerror = () => reject(new Error("the connection failed"));
      request.send(data);
    });
    const uploadAll = async (files) => {
      progress.hidden = false;
      for (const file of files) {
        status.textContent = "Uploading " + file.name + "…";
        progress.value = 0;
        try {
          await send(file);
          status.textContent = "Uploaded " + file.name;
        } catch (err) {
          status.textContent = "Could not upload " + file.name + ": " + err.message;
          status.classList.add("error");
          return;
        }
      }
      progress.hidden = true;
    };
    form.addEventListener("submit", (event) => {
      const files = form.querySelector('input[type="file"]').files;
      if (!files.length) return;
      event.preventDefault();
      uploadAll(Array.from(files)).then(() => form.reset());
    });
    document.addEventListener("dragover", (event) => {
      event.preventDefault();
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) document.body.classList.remove("dragging");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      document.body.classList.remove("dragging");
      if (event.dataTransfer?.files?.length) uploadAll(Array.from(event.dataTransfer.files));
    });
  }

  // Forms that ask before they act (delete, revoke).
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset?.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  // Share links: select the whole link on focus, for copying.
  document.querySelectorAll("input.share-url").forEach((input) => input.addEventListener("focus", () => input.select()));
})();
