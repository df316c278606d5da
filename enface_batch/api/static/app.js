"use strict";
const $ = (sel, el = document) => el.querySelector(sel);
const state = { token: sessionStorage.getItem("enface-token") || "", list: null, offset: 0, limit: 60, view: 0 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
    grid.append(el("div", { class: "card person-card", "data-person-id": p.person_id, onclick: () => showPerson(listId, p.person_id) },
      thumb(p.thumb, p.fields[0] || p.person_id), el("div", {}, p.fields[0] || p.person_id.slice(0, 8)),
      el("div", { class: "muted" }, `${p.faces} face${p.faces === 1 ? "" : "s"}`)));
  }
  const last = Math.min(page.offset + page.limit, page.total);
  const pager = el("div", { class: "pager" },
    el("button", { onclick: () => { state.offset = Math.max(0, state.offset - state.limit); showList(listId); } }, "‹ previous"),
    el("span", { class: "muted" }, `${page.total ? page.offset + 1 : 0}–${last} of ${page.total}`),
    el("button", { onclick: () => { if (last < page.total) { state.offset += state.limit; showList(listId); } } }, "next ›"));
  $("#view").replaceChildren(el("h2", {}, page.name), pager, grid);
}

async function showPhoto(sha, target) {
  const res = await api(`browse/images/${sha}`, { raw: true });
  const img = el("img", { id: "photo", src: URL.createObjectURL(await res.blob()) });
  target.replaceChildren(img);
}

async function showPerson(listId, personId) {
  const ticket = ++state.view;
  const p = await api(`browse/lists/${listId}/persons/${personId}?appearances=50`);
  if (ticket !== state.view) return;
  const faces = el("div", { class: "faces", id: "faces" });
  for (const f of p.faces) {
    faces.append(el("div", { class: "face" },
      f.thumb ? el("img", { class: "face-thumb", src: "data:image/jpeg;base64," + f.thumb, alt: "face" }) : el("span", { class: "noimg" }, "no image"),
      f.crop ? el("img", { class: "face-crop", src: "data:image/jpeg;base64," + f.crop, alt: "face crop" }) : null,
      el("div", {}, f.kind + (f.score != null ? ` (${f.score})` : "")),
      el("div", { class: "muted" }, f.image ? `${f.image.uri} (${f.image.width}×${f.image.height})` : (f.image_uri || "image not kept"))));
  }
  const photo = el("div", { id: "photo-box" });
  const rows = (p.appearances || []).map(a => el("tr", {},
    el("td", {}, a.created.slice(0, 19).replace("T", " ")), el("td", {}, a.score), el("td", {}, a.image_uri || "(not kept)"),
    el("td", {}, a.image_sha256 && a.image_uri ? el("button", { onclick: () => showPhoto(a.image_sha256, photo) }, "show") : "")));
  $("#view").replaceChildren(
    el("p", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showList(listId); } }, "‹ back to the list")),
    el("h2", { id: "person-title" }, p.fields.join(" · ") || p.person_id),
    el("p", { class: "muted" }, `person ${p.person_id} · created ${p.created}` + (p.features.length ? " · " + p.features.map(x => `${x.name} ${x.value}`).join(", ") : "")),
    el("h3", {}, "Faces"), faces,
    el("h3", {}, `Seen in ${rows.length} scanned photo${rows.length === 1 ? "" : "s"} (score ≥ ${p.min_score})`),
    el("table", {}, el("tr", {}, el("th", {}, "when"), el("th", {}, "score"), el("th", {}, "photo"), el("th", {})), ...rows),
    photo);
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
  const view = el("div", { id: "search-results" }, el("h2", {}, `Matches for ${file.name}`));
  const faces = out.results[0].faces;
  if (!faces.length) view.append(el("p", { class: "muted" }, "No face found."));
  for (const f of faces) {
    const grid = el("div", { class: "gallery" });
    for (const m of f.matches) {
      const card = el("div", { class: "card match-card", onclick: () => showPerson(m.list_id, m.person_id) }, el("span", { class: "noimg" }, "…"),
        el("div", {}, `${m.score} %`));
      grid.append(card);
      api(`browse/lists/${m.list_id}/persons/${m.person_id}?appearances=0`).then(p => {
        card.firstChild.replaceWith(thumb(p.faces[0].thumb, p.fields[0]));
        card.append(el("div", {}, p.fields[0] || p.person_id.slice(0, 8)));
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
    $("#who").textContent = "logged in";
    await loadLists();
  } catch (err) { showError(String(err.message || err)); }
});

$("#search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("#search-file").files[0];
  if (!file) return;
  try { await search(file); } catch (err) { showError(String(err.message || err)); }
});

if (state.token) loadLists().catch(err => showError(String(err.message || err)));
