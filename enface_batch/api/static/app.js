"use strict";
const $ = (sel, el = document) => el.querySelector(sel);
const state = { token: sessionStorage.getItem("enface-token") || "", list: null, offset: 0, limit: 60, view: 0, photoOffset: 0 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// ?per_page=N sets the page size of both views (default: 60 persons, 24 photos)
const PER_PAGE = parseInt(new URLSearchParams(location.search).get("per_page"), 10) || 0;
const PAGE = PER_PAGE || 24;
if (PER_PAGE) state.limit = PER_PAGE;

// /ui#token=...: a token handed over in the fragment, which browsers never send to a server nor put in logs;
// it moves to this tab's session storage and the address bar drops it.
(function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return;
  state.token = decodeURIComponent(m[1]);
  sessionStorage.setItem("enface-token", state.token);
  history.replaceState(null, "", location.pathname + location.search);
})();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A temporary token (JWT) goes in the `token` header; a permanent token (uuid) as the `token` parameter.
async function api(path, opts = {}) {
  const url = new URL(path, location.href);
  const headers = new Headers(opts.headers || {});
  if (UUID.test(state.token)) url.searchParams.set("token", state.token);
  else if (state.token) headers.set("token", state.token);
  const res = await fetch(url, { ...opts, headers });
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).message || msg; } catch (e) { /* not JSON */ }
    if (res.status === 401) showError("401: " + msg + " (log in again)");
    throw new Error(res.status + ": " + msg);
  }
  return opts.raw ? res : res.json();
}

function showError(msg) { $("#view").replaceChildren(el("p", { class: "error" }, msg)); }
function thumb(b64, alt) {
  return b64 ? el("img", { src: "data:image/jpeg;base64," + b64, alt: alt || "", class: "thumb" })
             : el("span", { class: "noimg" }, "no image");
}

async function loadLists() {
  const lists = await api("person/lists");
  const box = $("#lists");
  box.replaceChildren();
  for (const l of lists) {
    const b = el("button", { class: "list-item", "data-list-id": l.list_id, onclick: () => { state.offset = 0; showList(l.list_id); } },
      `${l.name} (${l.persons})`);
    box.append(b);
  }
  if (lists.length && !state.list) {
    const first = lists.find(l => l.persons > 0) || lists[0];
    showList(first.list_id);
  }
}

// Each view bumps state.view; an answer that arrives after the user moved on is dropped.
async function showList(listId) {
  const ticket = ++state.view;
  state.list = listId;
  for (const b of document.querySelectorAll(".list-item")) b.classList.toggle("active", b.dataset.listId === listId);
  const page = await api(`browse/lists/${listId}/persons?offset=${state.offset}&limit=${state.limit}`);
  if (ticket !== state.view) return;
  const grid = el("div", { class: "gallery", id: "gallery" });
  for (const p of page.persons) {
    grid.append(el("div", { class: "card person-card", "data-person-id": p.person_id, title: p.fields.join(" · "),
                            onclick: () => { state.photoOffset = 0; showPerson(listId, p.person_id); } },
      thumb(p.thumb, p.name), el("div", { class: "name" }, p.name),
      el("div", { class: "muted count" }, `${plural(p.photos, "photo")} · ${plural(p.faces, "face")}`)));
  }
  const last = Math.min(page.offset + page.limit, page.total);
  const pager = el("div", { class: "pager" },
    el("button", { id: "list-prev", onclick: () => { if (state.offset > 0) { state.offset = Math.max(0, state.offset - state.limit); showList(listId); } } }, "‹ previous"),
    el("span", { class: "muted", id: "list-range" }, `${page.total ? page.offset + 1 : 0}–${last} of ${page.total}`),
    el("button", { id: "list-next", onclick: () => { if (last < page.total) { state.offset += state.limit; showList(listId); } } }, "next ›"));
  $("#view").replaceChildren(el("h2", {}, page.name), el("p", { class: "muted" }, "Most photos first, then newest."), pager, grid);
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// The photo needs the token, which a plain link cannot carry: fetched, then shown and linked as a blob URL.
async function showPhoto(sha, target, caption) {
  target.replaceChildren(el("p", { class: "muted" }, "loading the photo…"));
  try {
    const res = await api(`browse/images/${sha}`, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    target.replaceChildren(el("p", {}, caption || "", " ", el("a", { href: url, target: "_blank", id: "photo-link" }, "open full size")),
      el("img", { id: "photo", src: url, alt: caption || "photo" }));
    target.scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (err) { target.replaceChildren(el("p", { class: "error" }, String(err.message || err))); }
}

async function showPerson(listId, personId) {
  const ticket = ++state.view;
  const offset = state.photoOffset || 0;
  const [p, photos] = await Promise.all([
    api(`browse/lists/${listId}/persons/${personId}?appearances=0&thumbs=true`),
    api(`browse/lists/${listId}/persons/${personId}/photos?offset=${offset}&limit=${PAGE}`)]);
  if (ticket !== state.view) return;
  const box = el("div", { id: "photo-box" });
  const grid = el("div", { class: "gallery", id: "photos" });
  for (const f of photos.photos) {
    const where = f.paths[0] || (f.image && f.image.uri) || "(photo not kept)";
    const score = f.score != null ? `${f.score} %` : f.how;
    const canShow = f.image_sha256 && f.image;
    grid.append(el("div", { class: "card photo-card", title: where, "data-sha": f.image_sha256 || "",
                            onclick: () => canShow ? showPhoto(f.image_sha256, box, where) : null },
      thumb(f.thumb, "face"), el("div", { class: "score" }, score),
      el("div", { class: "muted path" }, where)));
  }
  const last = Math.min(photos.offset + photos.limit, photos.total);
  const go = (o) => { state.photoOffset = o; showPerson(listId, personId); };
  const pager = el("div", { class: "pager" },
    el("button", { id: "photos-prev", onclick: () => { if (offset > 0) go(Math.max(0, offset - PAGE)); } }, "‹ previous"),
    el("span", { class: "muted", id: "photos-range" }, `${photos.total ? photos.offset + 1 : 0}–${last} of ${photos.total}`),
    el("button", { id: "photos-next", onclick: () => { if (last < photos.total) go(offset + PAGE); } }, "next ›"));
  const head = el("div", { class: "person-head" },
    p.crop ? el("img", { class: "face-crop", src: "data:image/jpeg;base64," + p.crop, alt: p.name }) : thumb(p.thumb, p.name),
    el("div", {},
      el("h2", { id: "person-title" }, p.name),
      p.fields.length > 1 ? el("p", {}, p.fields.slice(1).join(" · ")) : null,
      el("p", { class: "muted" }, `${plural(photos.total, "photo")} · ${plural(p.faces.length, "face")} · created ${p.created.slice(0, 10)}` +
        (p.features.length ? " · " + p.features.map(x => `${x.name} ${x.value}`).join(", ") : "")),
      el("p", { class: "muted" }, `person ${p.person_id}`)));
  $("#view").replaceChildren(
    el("p", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showList(listId); } }, "‹ back to the list")),
    head, el("h3", {}, "Photos (newest first; the score is how well the face matched)"), pager, grid, box);
}

async function search(file) {
  const form = new FormData();
  form.append("image", file);
  form.append("multi", "true");
  form.append("results", "5");
  if (state.list) form.append("person_list_search", state.list);
  const ticket = ++state.view;
  const out = await api("action", { method: "POST", body: form });
  if (ticket !== state.view) return;
  const view = el("div", { id: "search-results" }, el("h2", {}, `Best matches for ${file.name}`),
    el("img", { class: "query", src: URL.createObjectURL(file), alt: file.name }),
    el("p", { class: "muted" }, "A search only: the endpoint never creates or changes persons."));
  const faces = out.results[0].faces;
  if (!faces.length) view.append(el("p", { class: "muted" }, "No face found."));
  for (const f of faces) {
    const grid = el("div", { class: "gallery" });
    for (const m of f.matches) {
      const card = el("div", { class: "card match-card", "data-person-id": m.person_id,
                               onclick: () => { state.photoOffset = 0; showPerson(m.list_id, m.person_id); } }, el("span", { class: "noimg" }, "…"),
        el("div", {}, `${m.score} %`));
      grid.append(card);
      api(`browse/lists/${m.list_id}/persons/${m.person_id}?appearances=0`).then(p => {
        card.firstChild.replaceWith(thumb(p.thumb || (p.faces[0] && p.faces[0].thumb), p.name));
        card.append(el("div", { class: "name" }, p.name));
      }).catch(() => {});
    }
    view.append(el("h3", {}, `face ${f.face}`), f.matches.length ? grid : el("p", { class: "muted" }, "no match"));
  }
  $("#view").replaceChildren(view);
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const typed = $("#token-input").value.trim();
  try {
    if (typed) state.token = typed;
    else {
      const res = await fetch("user/login", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: $("#login-email").value, password: $("#login-password").value }) });
      const body = await res.json();
      if (!res.ok) throw new Error(res.status + ": " + body.message);
      state.token = body.token;
    }
    sessionStorage.setItem("enface-token", state.token);
    loggedIn();
    await loadLists();
  } catch (err) { showError(String(err.message || err)); }
});

$("#search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("#search-file").files[0];
  if (!file) return;
  try { await search(file); } catch (err) { showError(String(err.message || err)); }
});

// Logged in: the login form gives way to a log-out button (the token lives in this tab's session storage).
function loggedIn() {
  $("#login-form").hidden = true;
  $("#who").replaceChildren("logged in ", el("button", { id: "logout", onclick: () => {
    sessionStorage.removeItem("enface-token");
    location.reload();
  } }, "log out"));
}

if (state.token) {
  loggedIn();
  loadLists().catch(err => showError(String(err.message || err)));
}
