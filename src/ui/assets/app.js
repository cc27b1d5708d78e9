// The dashboard: a hash-routed page over the admin API (session cookie) and
// its event stream. Everything from the server goes in as text, never HTML.
"use strict";

const MAX_ROWS = 500; // rows drawn at once; the filter finds the rest
const TAIL = 200; // events kept in the live tail

const state = {
  rooms: new Map(), // roomId -> RoomView
  subs: [], // SubscriptionView
  tail: [], // newest first
  live: false,
  redraw: null, // the current view's live update, if any
};

// ---- small helpers ----------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    location.replace("/ui/"); // the session ended: back to the login form
    throw new Error("logged out");
  }
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(json.message || `HTTP ${res.status}`);
  return json.data;
}

function toast(text, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "toast show bad" : "toast show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = "toast"), 5000);
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 0) return `in ${fmtSecs(-s)}`;
  return `${fmtSecs(s)} ago`;
}

function fmtSecs(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function time(iso) {
  return iso ? h("time", { datetime: iso, title: iso }, ago(iso)) : "–";
}

// A time expected ahead: "in 3s", or "due" once it has come.
function due(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  return h("time", { datetime: iso, title: iso }, s > 0 ? `in ${fmtSecs(s)}` : "due");
}

function yesNo(v) {
  return v === true ? "yes" : v === false ? "no" : "–";
}

function action(label, run, attrs = {}) {
  return h("button", {
    type: "button",
    ...attrs,
    onclick: async (e) => {
      const b = e.currentTarget;
      b.disabled = true;
      try {
        await run();
      } catch (err) {
        toast(`${label}: ${err.message}`, true);
      } finally {
        b.disabled = false;
      }
    },
  }, label);
}

function table(head, rows) {
  return h("div", { class: "scroll" },
    h("table", {},
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)));
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

// ---- data -------------------------------------------------------------------

async function loadRooms() {
  const rooms = await api("GET", "/v1/rooms");
  state.rooms = new Map(rooms.map((r) => [r.roomId, r]));
}

async function loadSubs() {
  state.subs = await api("GET", "/v1/subscriptions");
}

// One stream for the whole page: it feeds the board, the room view and the tail.
function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/v1/events/stream?after=latest");
  es.onopen = () => {
    state.live = true;
    live.textContent = "live";
    live.className = "live on";
  };
  es.onerror = () => {
    state.live = false;
    live.textContent = "reconnecting…";
    live.className = "live";
  };
  es.onmessage = onEvent;
  for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
}

const EVENT_TYPES = [
  "room.created", "room.started", "room.ended", "room.deleted", "room.updated",
  "teacher.joined", "teacher.left", "recording.started", "recording.stopped",
  "participants.changed", "webhook.test",
];

function onEvent(msg) {
  let ev;
  try {
    ev = JSON.parse(msg.data);
  } catch {
    return;
  }
  const room = ev.data && state.rooms.get(ev.data.roomId);
  if (room && ev.data.current) {
    room.status = ev.data.current;
    room.lastChangedAt = ev.timestamp;
  }
  state.tail.unshift(ev);
  if (state.tail.length > TAIL) state.tail.length = TAIL;
  if (state.redraw) state.redraw(ev);
}

// ---- views ------------------------------------------------------------------

const filters = { rooms: "", roomState: "all" };

function roomMatches(r) {
  const s = r.status || {};
  const q = filters.rooms.trim().toLowerCase();
  if (q && !r.roomId.toLowerCase().includes(q) && !(s.title || "").toLowerCase().includes(q)) return false;
  switch (filters.roomState) {
    case "live": return s.isActive === true;
    case "idle": return s.isActive !== true;
    case "unhealthy": return r.health !== "ok";
    default: return true;
  }
}

function roomRow(r) {
  const s = r.status || {};
  return h("tr", { dataset: { room: r.roomId }, class: s.isActive ? "is-live" : "" },
    h("th", { scope: "row" }, h("a", { href: `#/room/${encodeURIComponent(r.roomId)}` }, r.roomId)),
    h("td", {}, s.title || ""),
    h("td", { class: "c-live" }, s.isActive ? h("span", { class: "badge live-badge" }, "live") : s.exists === false ? "absent" : "no"),
    h("td", { class: "c-teacher" }, yesNo(s.hasTeacher)),
    h("td", { class: "c-recording" }, yesNo(s.isRecording)),
    h("td", { class: "c-participants num" }, s.participantCount ?? "–"),
    h("td", {}, time(r.lastChangedAt)),
    h("td", {}, h("span", { class: `health ${r.health}`, title: r.lastError || "" }, r.health)),
    h("td", {}, due(r.nextPollAt)));
}

async function roomsView() {
  await loadRooms();
  const body = h("tbody");
  const count = h("p", { class: "hint", role: "status" });
  const draw = () => {
    const all = [...state.rooms.values()];
    const hits = all.filter(roomMatches);
    const live = all.filter((r) => r.status && r.status.isActive).length;
    body.replaceChildren(...hits.slice(0, MAX_ROWS).map(roomRow));
    count.textContent = `${all.length} rooms watched, ${live} live; showing ${Math.min(hits.length, MAX_ROWS)} of ${hits.length} that match.`;
  };
  let pending = false;
  state.redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  };
  const search = h("input", {
    type: "search", id: "room-filter", value: filters.rooms, placeholder: "room id or title",
    oninput: (e) => { filters.rooms = e.target.value; draw(); },
  });
  const which = h("select", { id: "room-state", onchange: (e) => { filters.roomState = e.target.value; draw(); } },
    [["all", "all rooms"], ["live", "live"], ["idle", "not live"], ["unhealthy", "failing polls"]]
      .map(([v, l]) => h("option", { value: v, selected: v === filters.roomState }, l)));
  show(
    h("h1", {}, "Rooms"),
    h("div", { class: "filters" },
      h("label", { for: "room-filter" }, "Find"), search,
      h("label", { for: "room-state" }, "Show"), which),
    count,
    h("div", { class: "scroll" }, h("table", { id: "rooms" },
      h("thead", {}, h("tr", {}, ["Room", "Title", "Live", "Teacher", "Recording", "Participants", "Last change", "Health", "Next poll"].map((c) => h("th", { scope: "col" }, c)))),
      body)));
  draw();
  // Health and next poll change without events: refresh them now and then.
  schedule(async () => { await loadRooms(); draw(); }, 15000);
}

async function roomView(roomId) {
  const [room, subs] = await Promise.all([
    api("GET", `/v1/rooms/${encodeURIComponent(roomId)}`),
    api("GET", "/v1/subscriptions"),
  ]);
  // The room's events, oldest first, paged; its newest 100 are shown.
  let events = [];
  let after = "";
  for (let page = 0; page < 20; page++) {
    const q = new URLSearchParams({ roomId, limit: "1000" });
    if (after) q.set("after", after);
    const data = await api("GET", `/v1/events?${q}`);
    events = events.concat(data.events).slice(-100);
    if (!data.next) break;
    after = data.next;
  }
  // Each event's deliveries, from every subscription's recent history.
  const byEvent = new Map();
  await Promise.all(subs.map(async (s) => {
    const data = await api("GET", `/v1/subscriptions/${encodeURIComponent(s.id)}/deliveries?limit=1000`);
    for (const d of data.deliveries) {
      if (d.roomId !== roomId) continue;
      if (!byEvent.has(d.eventId)) byEvent.set(d.eventId, []);
      byEvent.get(d.eventId).push(d);
    }
  }));
  const list = h("ol", { class: "timeline", reversed: true });
  const item = (ev) => h("li", { dataset: { event: ev.id } },
    h("div", {}, h("strong", {}, ev.type), " ", time(ev.timestamp), ` · #${ev.data.sequence}`, ev.data.inferred ? " · inferred" : ""),
    h("ul", { class: "changes" }, Object.entries(ev.data.changes || {}).map(([k, v]) =>
      h("li", {}, h("code", {}, k), ` ${JSON.stringify(v.previous)} → ${JSON.stringify(v.current)}`))),
    h("ul", { class: "sent" }, (byEvent.get(ev.id) || []).map((d) =>
      h("li", {}, h("span", { class: `status ${d.status}` }, d.status), ` to ${d.subscriptionId}, ${d.attempts.length} attempt(s)`))));
  list.replaceChildren(...events.slice().reverse().map(item));
  state.redraw = (ev) => {
    if (ev.data && ev.data.roomId === roomId) list.prepend(item(ev));
  };
  const s = room.status || {};
  show(
    h("p", {}, h("a", { href: "#/rooms" }, "← Rooms")),
    h("h1", {}, room.roomId, s.title ? ` · ${s.title}` : ""),
    h("dl", { class: "facts" },
      h("dt", {}, "Live"), h("dd", {}, yesNo(s.isActive)),
      h("dt", {}, "Teacher"), h("dd", {}, yesNo(s.hasTeacher)),
      h("dt", {}, "Recording"), h("dd", {}, yesNo(s.isRecording)),
      h("dt", {}, "Participants"), h("dd", {}, s.participantCount ?? "–"),
      h("dt", {}, "Health"), h("dd", {}, room.health, room.lastError ? ` (${room.lastError})` : ""),
      h("dt", {}, "Next poll"), h("dd", {}, due(room.nextPollAt), room.nextPollReason ? ` (${room.nextPollReason})` : "")),
    h("h2", {}, "Timeline"),
    events.length ? list : h("p", { class: "hint" }, "No events yet."));
}

async function subscriptionsView() {
  await loadSubs();
  const stats = new Map(await Promise.all(state.subs.map(async (s) =>
    [s.id, await api("GET", `/v1/subscriptions/${encodeURIComponent(s.id)}/stats`)])));
  const path = (s, tail = "") => `/v1/subscriptions/${encodeURIComponent(s.id)}${tail}`;
  const rows = state.subs.map((s) => {
    const st = stats.get(s.id) || {};
    const secret = h("output", { class: "secret" });
    const since = h("input", { type: "datetime-local", "aria-label": `Replay ${s.id} since` });
    return h("tr", { dataset: { sub: s.id } },
      h("th", { scope: "row" }, h("a", { href: `#/deliveries?sub=${encodeURIComponent(s.id)}` }, s.id),
        h("div", { class: "hint" }, s.description || "")),
      h("td", { class: "url" }, s.url),
      h("td", { class: "c-enabled" }, s.enabled ? "enabled" : h("span", { class: "bad" }, `disabled: ${s.disabledReason || "by hand"}`)),
      h("td", { class: "num" }, st.successRate == null ? "–" : `${Math.round(st.successRate * 100)}%`),
      h("td", { class: "num" }, st.pending ?? "–"),
      h("td", {}, time(st.oldestPendingAt)),
      h("td", { class: "actions" },
        action("Send test", async () => { await api("POST", path(s, "/test")); toast(`Test queued to ${s.id}`); }),
        action(s.enabled ? "Disable" : "Enable", async () => {
          await api("PATCH", path(s), { enabled: !s.enabled });
          toast(`${s.id} ${s.enabled ? "disabled" : "enabled"}`);
          route();
        }),
        action("Rotate secret", async () => {
          const r = await api("POST", path(s, "/rotate-secret"));
          secret.textContent = `new secret: ${r.secret} (the old one signs too until ${r.previousSecretExpiresAt})`;
          toast(`Secret of ${s.id} rotated`);
        }, { dataset: { action: "rotate" } }),
        h("span", { class: "replay" }, since, action("Replay", async () => {
          if (!since.value) throw new Error("choose a time");
          const r = await api("POST", path(s, "/replay"), { since: new Date(since.value).toISOString() });
          toast(`${r.queued} event(s) queued again to ${s.id}`);
        })),
        secret));
  });
  show(h("h1", {}, "Subscriptions"),
    state.subs.length
      ? table(["Subscription", "URL", "State", "Success (last 100)", "Backlog", "Oldest pending", "Actions"], rows)
      : h("p", { class: "hint" }, "No subscriptions yet: POST /v1/subscriptions creates one."));
  // Refresh the figures, unless the operator is typing or reading a new secret.
  const busy = () => (document.activeElement && document.activeElement.tagName === "INPUT")
    || [...document.querySelectorAll("output.secret")].some((o) => o.textContent);
  const again = async () => (busy() ? schedule(again, 10000) : subscriptionsView());
  schedule(again, 10000);
}

async function deliveriesView(params) {
  await loadSubs();
  const sub = params.get("sub") || (state.subs[0] && state.subs[0].id) || "";
  const status = params.get("status") || "";
  const go = (s, st) => { location.hash = `#/deliveries?${new URLSearchParams({ sub: s, status: st })}`; };
  const pickSub = h("select", { id: "delivery-sub", onchange: (e) => go(e.target.value, status) },
    state.subs.map((s) => h("option", { value: s.id, selected: s.id === sub }, `${s.id} · ${s.url}`)));
  const pickStatus = h("select", { id: "delivery-status", onchange: (e) => go(sub, e.target.value) },
    [["", "any status"], ["pending", "pending"], ["failed", "failed"], ["succeeded", "succeeded"]]
      .map(([v, l]) => h("option", { value: v, selected: v === status }, l)));
  const controls = h("div", { class: "filters" },
    h("label", { for: "delivery-sub" }, "Subscription"), pickSub,
    h("label", { for: "delivery-status" }, "Status"), pickStatus);
  if (!sub) {
    show(h("h1", {}, "Deliveries"), h("p", { class: "hint" }, "No subscriptions yet."));
    return;
  }
  const q = new URLSearchParams({ limit: "200" });
  if (status) q.set("status", status);
  const data = await api("GET", `/v1/subscriptions/${encodeURIComponent(sub)}/deliveries?${q}`);
  const rows = data.deliveries.map((d) => {
    const last = d.attempts[d.attempts.length - 1];
    return h("tr", { dataset: { delivery: d.id, status: d.status } },
      h("td", {}, time(d.createdAt)),
      h("td", {}, d.eventType),
      h("td", {}, d.roomId ? h("a", { href: `#/room/${encodeURIComponent(d.roomId)}` }, d.roomId) : "–"),
      h("td", {}, h("span", { class: `status ${d.status}` }, d.status)),
      h("td", {}, d.attempts.length === 0 ? "none yet" : h("details", {},
        h("summary", {}, `${d.attempts.length}: last ${last.statusCode ?? last.error ?? "?"} in ${last.durationMs} ms`),
        h("ol", {}, d.attempts.map((a) => h("li", {}, `${a.at}: ${a.statusCode ?? a.error ?? "?"} in ${a.durationMs} ms`))))),
      h("td", {}, d.status === "pending" ? due(d.nextAttemptAt) : "–"),
      h("td", {}, d.status === "failed" ? action("Retry", async () => {
        await api("POST", `/v1/subscriptions/${encodeURIComponent(sub)}/deliveries/${encodeURIComponent(d.id)}/retry`);
        toast(`Delivery ${d.id} queued again`);
        route();
      }, { dataset: { action: "retry" } }) : ""));
  });
  show(h("h1", {}, "Deliveries"), controls,
    rows.length ? table(["Queued", "Event", "Room", "Status", "Attempts", "Next attempt", ""], rows)
      : h("p", { class: "hint" }, "None."),
    data.next ? h("p", { class: "hint" }, "Older deliveries exist; the API pages through them with ?before=.") : "");
  schedule(() => deliveriesView(params), 5000);
}

function eventsView() {
  const room = h("input", { type: "search", id: "tail-room", placeholder: "room id" });
  const type = h("select", { id: "tail-type" }, h("option", { value: "" }, "any type"),
    EVENT_TYPES.map((t) => h("option", { value: t }, t)));
  const list = h("ol", { class: "tail", id: "tail" });
  const matches = (ev) => (!room.value || (ev.data && ev.data.roomId === room.value.trim()))
    && (!type.value || ev.type === type.value);
  const item = (ev) => h("li", { dataset: { event: ev.id } },
    h("time", { datetime: ev.timestamp }, ev.timestamp.slice(11, 19)), " ",
    h("strong", {}, ev.type), " ",
    ev.data && ev.data.roomId ? h("a", { href: `#/room/${encodeURIComponent(ev.data.roomId)}` }, ev.data.roomId) : "",
    ` #${ev.data ? ev.data.sequence ?? "" : ""}`);
  const draw = () => list.replaceChildren(...state.tail.filter(matches).map(item));
  room.addEventListener("input", draw);
  type.addEventListener("change", draw);
  state.redraw = (ev) => {
    if (!matches(ev)) return;
    list.prepend(item(ev));
    while (list.children.length > TAIL) list.lastChild.remove();
  };
  show(h("h1", {}, "Events"),
    h("p", { class: "hint" }, "Live, newest first, since this page was opened (GET /v1/events/stream)."),
    h("div", { class: "filters" },
      h("label", { for: "tail-room" }, "Room"), room,
      h("label", { for: "tail-type" }, "Type"), type),
    list);
  draw();
}

// ---- routing ------------------------------------------------------------------

let timer = null;
function schedule(fn, ms) {
  timer = setTimeout(() => fn().catch((e) => toast(e.message, true)), ms);
}

async function route() {
  clearTimeout(timer);
  state.redraw = null;
  const [path, query] = (location.hash.slice(1) || "/rooms").split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) {
    const current = path.startsWith(a.getAttribute("href").slice(1)) ||
      (path.startsWith("/room/") && a.getAttribute("href") === "#/rooms");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (path.startsWith("/room/")) await roomView(decodeURIComponent(path.slice(6)));
    else if (path === "/subscriptions") await subscriptionsView();
    else if (path === "/deliveries") await deliveriesView(params);
    else if (path === "/events") eventsView();
    else await roomsView();
  } catch (e) {
    show(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, e.message));
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST" });
  location.replace("/ui/");
});
window.addEventListener("hashchange", () => {
  route();
  document.getElementById("main").focus();
});
connect();
route();
