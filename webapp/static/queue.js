/* The escalation queue: log in, list the team's open escalations, follow them live over
 * server-sent events (fetch + stream reader, so the Bearer header works), claim one, and read
 * its handoff context. Every piece of data is rendered with textContent, never as markup. */
(function () {
  "use strict";

  const API = "/api/v1";
  const STREAM_PATH = "/ai-sessions/escalations/stream";
  const STORAGE_KEY = "escalations.session";
  const PAGE_SIZE = 25;
  const MAX_PAGE = 100;
  const POLL_MS = 15000;
  const RECONCILE_MS = 45000; // shorter than STREAM_IDLE_MS: a live stream re-reads too
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_CAP_MS = 10000;
  // The server sends a keepalive at least every 25 s; silence for longer means a dead link.
  const STREAM_IDLE_MS = 60000;
  const CLAIMED_LINGER_MS = 4000;
  const AGE_TICK_MS = 15000;
  const FLASH_MS = 1000;
  const APP_TITLE = "Escalation queue";

  const $ = (id) => document.getElementById(id);
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  const ASSESSMENT_BADGES = {
    pending: ["Assessment pending", "pending"],
    ready: ["Assessment ready", "ok"],
    failed: ["Assessment failed", "bad"],
    skipped: ["No assessment", "muted"],
  };
  const PSA_BADGES = {
    pending: ["PSA note pending", "pending"],
    sent: ["PSA note sent", "ok"],
    failed: ["PSA note retrying", "warn"],
    dead: ["PSA note failed", "bad"],
    skipped: ["No PSA note", "muted"],
  };
  const PSA_STATUS_TEXT = {
    pending: "Pending", sent: "Sent", failed: "Failed, retrying", dead: "Failed, gave up",
    skipped: "Not sent",
  };
  const DELIVERY_BADGES = {
    pending: ["Pending", "pending"], sending: ["Sending", "pending"], sent: ["Sent", "ok"],
    failed: ["Retrying", "warn"], dead: ["Failed", "bad"], skipped: ["Skipped", "muted"],
  };
  const CHANNELS = { email: "Email", psa: "PSA note", assessment: "AI assessment", chat: "Team chat" };

  const state = {
    token: null,
    user: null,
    generation: 0,          // bumped at logout: late answers of the old session are dropped
    items: new Map(),       // handoff id -> summary, the escalations shown in the queue
    rows: new Map(),        // handoff id -> <li>
    gone: new Set(),        // claimed or cancelled: never shown as open again
    touched: new Map(),     // handoff id -> change counter of its last live event
    changes: 0,
    nextCursor: null,
    loaded: false,
    loading: null,
    lastEventId: null,
    stream: null,
    retries: 0,
    lostAnnounced: false,
    reconnectTimer: null,
    pollTimer: null,
    ageTimer: null,
    flashTimer: null,
    unseen: 0,
    baseTitle: APP_TITLE,
    handoffId: null,
    handoff: null,
    handoffRefresh: null,
    notice: null,
  };

  // ---- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || null;
    }
  }

  /** An ApiError from an answer that is not ok, read from the API's one error shape. */
  async function errorOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    const error = body && body.error;
    if (error && typeof error.message === "string") {
      return new ApiError(response.status, error.code || "error", error.message, error.details);
    }
    return new ApiError(response.status, "http_" + response.status,
      "The server answered " + response.status + " " + (response.statusText || "") + ".");
  }

  async function api(method, path, body) {
    const generation = state.generation;
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, {
        method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, "network_error",
        "Cannot reach the server. Check the connection and try again.");
    }
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401 && path !== "/auth/login" && generation === state.generation) {
        sessionEnded(error.message);
      }
      throw error;
    }
    if (response.status === 204) return null;
    return response.json();
  }

  /** An API message as a sentence for the screen: "invalid email" -> "Invalid email". */
  function sentence(message) {
    const text = String(message || "Something went wrong.");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  // ---- small DOM helpers ---------------------------------------------------------------------

  function setText(element, value) {
    element.textContent = value == null ? "" : String(value);
  }

  function show(element, visible) {
    element.hidden = !visible;
  }

  function badge(element, label, tone, title) {
    for (const name of [...element.classList]) {
      if (name.startsWith("badge-")) element.classList.remove(name);
    }
    element.classList.add("badge", "badge-" + tone);
    setText(element, label);
    if (title) element.title = title;
    else element.removeAttribute("title");
    element.hidden = false;
  }

  function make(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text != null) element.textContent = String(text);
    return element;
  }

  function isAdmin() {
    return Boolean(state.user) && (state.user.role === "owner" || state.user.role === "admin");
  }

  function isSenior() {
    return Boolean(state.user) && state.user.role !== "viewer";
  }

  function personName(ref, id) {
    if (ref && state.user && ref.id === state.user.id) return "you";
    if (ref && ref.name) return ref.name;
    return id ? "user #" + id : "a teammate";
  }

  // ---- time ----------------------------------------------------------------------------------

  /** "just now", "12 min ago", "2 h 5 min ago", "yesterday", "in 3 min". */
  function relativeTime(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const difference = Date.now() - then;
    const seconds = Math.round(Math.abs(difference) / 1000);
    if (seconds < 45) return "just now";
    const span = duration(seconds);
    if (difference < 0) return "in " + span;
    return span === "1 day" ? "yesterday" : span + " ago";
  }

  function duration(seconds) {
    const minutes = Math.max(1, Math.round(seconds / 60));
    if (minutes < 60) return minutes + " min";
    const hours = Math.floor(minutes / 60);
    if (hours < 24) {
      const rest = minutes % 60;
      return hours < 6 && rest ? hours + " h " + rest + " min" : hours + " h";
    }
    const days = Math.floor(hours / 24);
    return days === 1 ? "1 day" : days + " days";
  }

  function absoluteTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  /** A <time> that keeps saying how long ago it was. */
  function setTime(element, iso) {
    if (!iso) {
      setText(element, "—");
      element.removeAttribute("datetime");
      delete element.dataset.relative;
      return;
    }
    element.dateTime = iso;
    element.dataset.relative = iso;
    element.title = absoluteTime(iso);
    setText(element, relativeTime(iso));
  }

  function refreshAges() {
    document.querySelectorAll("time[data-relative]").forEach((element) => {
      setText(element, relativeTime(element.dataset.relative));
    });
  }

  // ---- announcements and the tab title -------------------------------------------------------

  function announce(message) {
    const region = $("announcer");
    const line = make("p", null, message);
    region.appendChild(line);
    while (region.childElementCount > 5) region.firstElementChild.remove();
  }

  function setBaseTitle(title) {
    state.baseTitle = title;
    if (!state.flashTimer && !state.unseen) document.title = title;
  }

  function flashLabel() {
    return "(" + state.unseen + ") New escalation" + (state.unseen === 1 ? "" : "s");
  }

  /** While the tab is hidden, the title counts new escalations (blinking, unless the user
   *  asked for reduced motion); it stops once the tab is visible again. */
  function flashTitle() {
    if (!document.hidden) return;
    state.unseen += 1;
    document.title = flashLabel();
    if (state.flashTimer || reducedMotion.matches) return;
    let on = true;
    state.flashTimer = setInterval(() => {
      on = !on;
      document.title = on ? flashLabel() : state.baseTitle;
    }, FLASH_MS);
  }

  function stopFlash() {
    clearInterval(state.flashTimer);
    state.flashTimer = null;
    state.unseen = 0;
    document.title = state.baseTitle;
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    stopFlash();
    if (state.reconnectTimer) reconnectNow();
  });

  // ---- the connection indicator --------------------------------------------------------------

  const CONNECTION_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    polling: "Updates every 15 s",
  };

  function setConnection(mode) {
    const element = $("connection");
    element.dataset.state = mode;
    setText($("connection-text"), CONNECTION_TEXT[mode] || "");
    element.title = mode === "polling"
      ? "Viewers get the queue every 15 seconds instead of live."
      : mode === "reconnecting" ? "The live connection dropped; reconnecting." : "";
    show(element, Boolean(mode) && mode !== "idle");
  }

  // ---- Server-sent events --------------------------------------------------------------------

  /** The SSE wire format, fed in arbitrary chunks: lines end in CRLF, LF or CR; a blank line
   *  dispatches; `:` lines are comments; `data` lines join with "\n"; `id` persists. */
  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.reset();
      this.lastEventId = null;
    }

    reset() {
      this.type = "";
      this.data = [];
      this.id = undefined;
    }

    push(chunk) {
      const buffer = this.buffer + chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i += 1) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        if (c === "\r" && i + 1 === buffer.length) break; // a CR may be half of a CRLF
        this.line(buffer.slice(start, i));
        if (c === "\r" && buffer[i + 1] === "\n") i += 1;
        start = i + 1;
      }
      this.buffer = buffer.slice(start);
    }

    line(line) {
      if (line === "") {
        this.dispatch();
        return;
      }
      if (line[0] === ":") return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && value.indexOf("\0") < 0) this.id = value;
    }

    dispatch() {
      if (this.id !== undefined) this.lastEventId = this.id;
      if (this.data.length) {
        const event = {
          type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId,
        };
        this.reset();
        this.onEvent(event);
      } else {
        this.reset();
      }
    }
  }

  /** "ms-seq" stream ids compare as numbers; anything else is not comparable (null). */
  function eventPosition(id) {
    const match = /^(\d+)-(\d+)$/.exec(id || "");
    return match ? [Number(match[1]), Number(match[2])] : null;
  }

  function isAfter(id, reference) {
    const a = eventPosition(id);
    const b = eventPosition(reference);
    if (!a || !b) return true;
    return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  }

  async function connectStream() {
    state.reconnectTimer = null;
    if (!state.token || !isSenior()) return;
    const generation = state.generation;
    const controller = new AbortController();
    state.stream = controller;
    const sentId = state.lastEventId;
    const headers = { Authorization: "Bearer " + state.token, Accept: "text/event-stream" };
    if (sentId) headers["Last-Event-ID"] = sentId;
    if (!state.retries) setConnection("connecting");
    let idle = null;
    const stillHere = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
    };
    try {
      const response = await fetch(API + STREAM_PATH, {
        headers, cache: "no-store", signal: controller.signal,
      });
      if (!response.ok) {
        const error = await errorOf(response);
        if (generation !== state.generation) return;
        if (response.status === 401) {
          sessionEnded(error.message);
          return;
        }
        if (response.status === 403) {
          startPolling();
          return;
        }
        throw error;
      }
      stillHere();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser((event) => {
        if (generation === state.generation) onStreamEvent(event);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done || generation !== state.generation) break;
        stillHere();
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (_) {
      // a dropped connection, a refused one, a 503: all end in a reconnect below
    } finally {
      clearTimeout(idle);
    }
    if (generation !== state.generation || state.stream !== controller) return;
    state.stream = null;
    scheduleReconnect();
  }

  function scheduleReconnect() {
    state.retries += 1;
    const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (state.retries - 1));
    const jittered = Math.min(BACKOFF_CAP_MS, delay * (0.8 + Math.random() * 0.4));
    setConnection("reconnecting");
    if (!state.lostAnnounced) {
      state.lostAnnounced = true;
      announce("Live updates interrupted. Reconnecting…");
    }
    if (!state.loaded && !state.loading) loadFirstPage();
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connectStream, jittered);
  }

  function reconnectNow() {
    if (!state.reconnectTimer) return;
    clearTimeout(state.reconnectTimer);
    connectStream();
  }

  window.addEventListener("online", reconnectNow);

  function onStreamEvent(event) {
    if (event.type === "ready") {
      if (event.id) state.lastEventId = event.id;
      state.retries = 0;
      setConnection("live");
      if (state.lostAnnounced) {
        state.lostAnnounced = false;
        announce("Live updates restored.");
      }
      // Replay brings what was missed while away; a fresh read of the queue as well, now and
      // every 45 s while live, brings what no event carried (one the server could not
      // publish while Redis was unavailable, or anything before the first connection).
      loadFirstPage();
      clearInterval(state.pollTimer);
      state.pollTimer = setInterval(loadFirstPage, RECONCILE_MS);
      return;
    }
    if (event.id && state.lastEventId && !isAfter(event.id, state.lastEventId)) return;
    if (event.id) state.lastEventId = event.id;
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (payload && payload.handoff) applyEvent(event.type, payload.handoff);
  }

  // ---- the queue -----------------------------------------------------------------------------

  /** Newest first: by created_at, then by id. Negative when a comes before b. */
  function queueOrder(a, b) {
    const difference = Date.parse(b.created_at) - Date.parse(a.created_at);
    return difference || b.id - a.id;
  }

  function applyEvent(type, handoff) {
    state.changes += 1;
    state.touched.set(handoff.id, state.changes);
    if (type === "handoff_cancelled" || handoff.status === "cancelled") {
      withdrawn(handoff);
    } else if (type === "handoff_claimed" || handoff.status === "claimed") {
      claimed(handoff);
    } else if (handoff.status === "open") {
      const isNew = !state.items.has(handoff.id);
      upsert(handoff, { animate: true, announce: type === "handoff_created" && isNew });
    } else {
      remove(handoff.id);
    }
    if (handoff.id === state.handoffId) refreshHandoffSoon();
  }

  /** Insert or update an open escalation; returns false if it does not belong on screen. */
  function upsert(handoff, options) {
    const opts = options || {};
    if (handoff.intent && handoff.intent !== "escalate") return false;
    if (state.gone.has(handoff.id) || handoff.status !== "open") return false;
    const existing = state.rows.get(handoff.id);
    if (existing) {
      state.items.set(handoff.id, handoff);
      fillRow(existing, handoff);
      return true;
    }
    // With more pages to load, an escalation older than the last one shown belongs to them.
    const shown = [...state.items.values()].sort(queueOrder);
    const last = shown[shown.length - 1];
    if (state.nextCursor && last && queueOrder(handoff, last) > 0) return false;
    const row = buildRow(handoff);
    const before = shown.find((other) => queueOrder(handoff, other) < 0);
    $("queue-list").insertBefore(row, before ? state.rows.get(before.id) : null);
    state.items.set(handoff.id, handoff);
    state.rows.set(handoff.id, row);
    if (opts.animate && !reducedMotion.matches) {
      row.classList.add("row-enter");
      const settle = (event) => {
        if (event.animationName !== "row-glow") return;
        row.classList.remove("row-enter");
        row.removeEventListener("animationend", settle);
      };
      row.addEventListener("animationend", settle);
    }
    if (opts.announce) {
      const client = handoff.session && handoff.session.client_name;
      const title = handoff.session ? handoff.session.title : "an escalation";
      announce("New " + (handoff.urgency === "high" ? "high-urgency " : "") + "escalation: "
        + (client ? client + ", " : "") + title + ", from "
        + personName(handoff.created_by_user, handoff.created_by) + ".");
      flashTitle();
    }
    updateSummary();
    return true;
  }

  function buildRow(handoff) {
    const row = $("row-template").content.firstElementChild.cloneNode(true);
    row.dataset.id = String(handoff.id);
    row.id = "row-" + handoff.id;
    const title = row.querySelector(".row-title");
    title.id = "row-title-" + handoff.id;
    const button = row.querySelector(".row-claim");
    button.setAttribute("aria-describedby", title.id);
    button.addEventListener("click", () => claim(handoff.id, button));
    fillRow(row, handoff);
    return row;
  }

  function fillRow(row, handoff) {
    const session = handoff.session || {};
    setText(row.querySelector(".row-client"), session.client_name || "No client");
    const urgency = row.querySelector(".row-urgency");
    const high = handoff.urgency === "high";
    row.classList.toggle("row-high", high);
    if (high) badge(urgency, "High urgency", "high");
    else show(urgency, false);
    const link = row.querySelector(".row-link");
    link.href = "#handoff-" + handoff.id;
    setText(link, session.title || "Escalation #" + handoff.id);
    setText(row.querySelector(".row-note"), handoff.note);
    setText(row.querySelector(".row-escalator"),
      personName(handoff.created_by_user, handoff.created_by));
    setTime(row.querySelector(".row-age"), handoff.created_at);
    const ticket = session.psa_ticket_id;
    setText(row.querySelector(".row-ticket"), ticket ? "Ticket " + ticket : "");
    show(row.querySelector(".row-ticket-part"), Boolean(ticket));
    const assessment = handoff.assessment || { status: "pending" };
    const [aLabel, aTone] = ASSESSMENT_BADGES[assessment.status] || [assessment.status, "muted"];
    badge(row.querySelector(".row-assessment"), aLabel, aTone, assessment.last_error);
    const psa = handoff.psa || { status: "pending" };
    const [pLabel, pTone] = PSA_BADGES[psa.status] || [psa.status, "muted"];
    badge(row.querySelector(".row-psa"), pLabel, pTone, psa.last_error);
    show(row.querySelector(".row-claim"), isSenior() && !row.classList.contains("row-claimed"));
  }

  /** Someone claimed it: say who, grey it out, then let it go. */
  function claimed(handoff, label) {
    state.gone.add(handoff.id);
    const row = state.rows.get(handoff.id);
    if (!row) {
      state.items.delete(handoff.id);
      return;
    }
    if (row.classList.contains("row-claimed")) return;
    const who = personName(handoff.claimed_by_user, handoff.claimed_by);
    const text = label || "Claimed by " + who;
    row.classList.add("row-claimed");
    const status = row.querySelector(".row-status");
    setText(status, text);
    status.className = "row-status row-status-claimed";
    show(row.querySelector(".row-claim"), false);
    state.items.delete(handoff.id);
    updateSummary();
    if (who !== "you") {
      const title = handoff.session ? handoff.session.title : "An escalation";
      announce(title + ": " + text + ".");
    }
    setTimeout(() => remove(handoff.id), CLAIMED_LINGER_MS);
  }

  function withdrawn(handoff) {
    state.gone.add(handoff.id);
    if (state.rows.has(handoff.id)) {
      const title = handoff.session ? handoff.session.title : "An escalation";
      const by = personName(handoff.created_by_user, handoff.created_by);
      announce(title + ": withdrawn by " + by + ".");
    }
    remove(handoff.id);
  }

  function remove(id) {
    state.items.delete(id);
    const row = state.rows.get(id);
    if (!row) return;
    state.rows.delete(id);
    if (row.contains(document.activeElement)) {
      const next = row.nextElementSibling || row.previousElementSibling;
      const target = next ? next.querySelector(".row-link") : $("queue-title");
      target.focus();
    }
    const done = () => {
      row.remove();
      updateSummary();
    };
    if (reducedMotion.matches || document.hidden) {
      done();
      return;
    }
    row.classList.add("row-leave");
    row.addEventListener("animationend", done, { once: true });
    setTimeout(done, 700);
    updateSummary();
  }

  function updateSummary() {
    const open = state.items.size;
    const more = state.nextCursor ? " (more below)" : "";
    const text = !state.loaded ? ""
      : open === 0 ? "Nothing waiting for a senior."
        : open + " waiting for a senior" + more + ", newest first.";
    setText($("queue-summary"), text);
    show($("queue-empty"), state.loaded && open === 0 && state.rows.size === 0);
    show($("load-more"), Boolean(state.nextCursor));
  }

  function queueError(error) {
    const element = $("queue-error");
    if (!error) {
      show(element, false);
      return;
    }
    setText(element, sentence(error.message));
    show(element, true);
  }

  /** Read the newest escalations again and make the screen agree: new ones slide in, ones
   *  no longer open go; a live event newer than the read wins over it. */
  function loadFirstPage() {
    if (state.loading) {
      state.loading.again = true;
      return state.loading.promise;
    }
    const generation = state.generation;
    const first = !state.loaded;
    const limit = Math.min(MAX_PAGE, Math.max(PAGE_SIZE, state.items.size));
    const startedAt = state.changes;
    const job = { again: false };
    state.loading = job;
    show($("queue-loading"), first);
    job.promise = api("GET", "/ai-sessions/escalations?status=open&limit=" + limit)
      .then((page) => {
        if (generation !== state.generation) return;
        queueError(null);
        const fresh = (id) => (state.touched.get(id) || 0) <= startedAt;
        const read = new Set(page.items.map((handoff) => handoff.id));
        const oldest = page.items[page.items.length - 1];
        for (const [id, handoff] of [...state.items]) {
          const inWindow = !page.next_cursor || (oldest && queueOrder(handoff, oldest) <= 0);
          if (!read.has(id) && inWindow && fresh(id)) remove(id);
        }
        state.loaded = true;
        if (first) state.nextCursor = null; // so the page's own rows are all placed
        for (const handoff of page.items) {
          if (fresh(handoff.id)) upsert(handoff, { animate: !first, announce: !first });
        }
        if (first || state.items.size <= limit) state.nextCursor = page.next_cursor;
        updateSummary();
      })
      .catch((error) => {
        if (generation === state.generation && error.status !== 401) queueError(error);
      })
      .finally(() => {
        if (generation !== state.generation) return;
        show($("queue-loading"), false);
        state.loading = null;
        if (job.again) loadFirstPage();
      });
    return job.promise;
  }

  async function loadMore() {
    const button = $("load-more");
    if (!state.nextCursor) return;
    const generation = state.generation;
    button.disabled = true;
    setText(button, "Loading…");
    try {
      const page = await api("GET", "/ai-sessions/escalations?status=open&limit=" + PAGE_SIZE
        + "&cursor=" + encodeURIComponent(state.nextCursor));
      if (generation !== state.generation) return;
      queueError(null);
      state.nextCursor = null; // so upsert places these rather than deferring them
      for (const handoff of page.items) upsert(handoff, {});
      state.nextCursor = page.next_cursor;
      updateSummary();
    } catch (error) {
      if (generation === state.generation && error.status !== 401) queueError(error);
    } finally {
      button.disabled = false;
      setText(button, "Load more");
    }
  }

  function startPolling() {
    clearInterval(state.pollTimer);
    setConnection("polling");
    loadFirstPage();
    state.pollTimer = setInterval(() => {
      loadFirstPage();
      if (state.handoffId) refreshHandoffSoon();
    }, POLL_MS);
  }

  // ---- claiming ------------------------------------------------------------------------------

  async function claim(id, button, errorElement) {
    const generation = state.generation;
    const label = button.textContent;
    button.disabled = true;
    setText(button, "Claiming…");
    const row = state.rows.get(id);
    const status = errorElement || (row && row.querySelector(".row-status"));
    if (status) setText(status, "");
    try {
      const handoff = await api("POST", "/handoffs/" + id + "/claim");
      if (generation !== state.generation) return;
      claimed(handoff);
      state.notice = { id, text: "You claimed this escalation; the session is now yours." };
      announce("You claimed " + (handoff.session ? handoff.session.title : "the escalation") + ".");
      if (location.hash === "#handoff-" + id) showHandoff(id);
      else location.hash = "#handoff-" + id;
    } catch (error) {
      if (generation !== state.generation || error.status === 401) return;
      button.disabled = false;
      setText(button, label);
      let message = sentence(error.message);
      if (error.status === 409) {
        const by = error.details && error.details.claimed_by;
        if (error.code === "already_claimed") {
          message = "Already claimed by " + ((by && by.name) || "someone else");
        }
        show(button, false);
        const known = state.items.get(id);
        if (known) {
          claimed({ ...known, claimed_by: by && by.id, claimed_by_user: by || null }, message);
        }
        if (id === state.handoffId) refreshHandoffSoon();
      }
      if (status) {
        setText(status, message);
        if (!errorElement) {
          status.className = "row-status "
            + (error.status === 409 ? "row-status-claimed" : "row-status-error");
        }
      }
      if (!(error.status === 409 && state.rows.has(id))) announce(message + ".");
    }
  }

  // ---- the handoff-context screen ------------------------------------------------------------

  async function showHandoff(id, quiet) {
    const generation = state.generation;
    if (!quiet) {
      state.handoffId = id;
      state.handoff = null;
      showView("handoff-view");
      show($("handoff-body"), false);
      show($("handoff-error"), false);
      show($("handoff-loading"), true);
      setText($("handoff-claim-error"), "");
      setBaseTitle("Escalation #" + id + " · " + APP_TITLE);
    }
    const [handoff, deliveries] = await Promise.allSettled([
      api("GET", "/handoffs/" + id),
      api("GET", "/handoffs/" + id + "/deliveries"),
    ]);
    if (generation !== state.generation || state.handoffId !== id) return;
    show($("handoff-loading"), false);
    if (handoff.status === "rejected") {
      if (handoff.reason.status === 401) return;
      setText($("handoff-error"), sentence(handoff.reason.message));
      show($("handoff-error"), true);
      if (!quiet) {
        show($("handoff-body"), false);
        $("handoff-error").focus();
      }
      return;
    }
    show($("handoff-error"), false);
    renderHandoff(handoff.value);
    if (deliveries.status === "fulfilled") {
      renderDeliveries(deliveries.value.items);
      show($("deliveries-error"), false);
    } else if (deliveries.reason.status !== 401) {
      setText($("deliveries-error"), sentence(deliveries.reason.message));
      show($("deliveries-error"), true);
    }
    show($("handoff-body"), true);
    if (!quiet) $("handoff-title").focus();
  }

  function refreshHandoffSoon() {
    if (!state.handoffId || state.handoffRefresh) return;
    const id = state.handoffId;
    state.handoffRefresh = setTimeout(() => {
      state.handoffRefresh = null;
      if (state.handoffId === id && !$("handoff-view").hidden) showHandoff(id, true);
    }, 250);
  }

  function renderHandoff(handoff) {
    state.handoff = handoff;
    const session = handoff.session || {};
    setBaseTitle((session.title || "Escalation #" + handoff.id) + " · " + APP_TITLE);
    setText($("handoff-client"), session.client_name || "No client");
    setText($("handoff-title"), session.title || "Escalation #" + handoff.id);

    const urgency = $("handoff-urgency");
    if (handoff.urgency === "high") badge(urgency, "High urgency", "high");
    else badge(urgency, "Normal urgency", "muted");

    const status = $("handoff-status");
    if (handoff.status === "open") badge(status, "Open", "open");
    else if (handoff.status === "claimed") {
      const by = personName(handoff.claimed_by_user, handoff.claimed_by);
      badge(status, "Claimed by " + by, "claimed",
        handoff.claimed_at ? absoluteTime(handoff.claimed_at) : null);
    } else if (handoff.status === "cancelled") badge(status, "Withdrawn", "muted");
    else badge(status, sentence(handoff.status), "muted");

    const byline = $("handoff-byline");
    byline.replaceChildren();
    const escalator = personName(handoff.created_by_user, handoff.created_by);
    byline.append("Escalated by " + escalator + " · ");
    const age = make("time");
    setTime(age, handoff.created_at);
    byline.append(age);
    if (session.psa_ticket_id) byline.append(" · Ticket " + session.psa_ticket_id);

    const claimButton = $("handoff-claim");
    show(claimButton, isSenior() && handoff.intent === "escalate" && handoff.status === "open");
    claimButton.disabled = false;
    setText(claimButton, "Claim");

    const notice = $("handoff-notice");
    if (state.notice && state.notice.id === handoff.id) {
      setText(notice, state.notice.text);
      show(notice, true);
    } else {
      show(notice, false);
    }

    setText($("handoff-note"), handoff.note);
    renderSnapshot(handoff.snapshot || {});
    renderAssessment(handoff.assessment || { status: "pending" });
    renderPsa(handoff.psa || { status: "pending" });
  }

  function renderSnapshot(snapshot) {
    setText($("snapshot-problem"), snapshot.problem || "Not described.");
    const list = $("snapshot-messages");
    list.replaceChildren();
    for (const message of snapshot.messages || []) {
      const engineer = message.role !== "assistant";
      const item = make("li", "message " + (engineer ? "message-engineer" : "message-assistant"));
      const head = make("p", "message-head");
      head.append(make("span", "message-role", engineer ? "Engineer" : "Assistant"));
      if (message.created_at) {
        const when = make("time", "message-time");
        setTime(when, message.created_at);
        head.append(when);
      }
      item.append(head, make("p", "message-body", message.content));
      list.append(item);
    }
    show($("snapshot-empty"), !(snapshot.messages || []).length);
    setText($("snapshot-captured"), snapshot.captured_at
      ? "Snapshot taken " + absoluteTime(snapshot.captured_at) + "." : "");
  }

  function renderAssessment(assessment) {
    const [label, tone] = ASSESSMENT_BADGES[assessment.status] || [assessment.status, "muted"];
    badge($("assessment-badge"), label, tone);
    const ready = assessment.status === "ready";
    show($("assessment-ready"), ready);
    const stateText = {
      pending: "The assessment is being prepared; it appears here as soon as it is ready.",
      failed: "The assessment could not be made"
        + (assessment.last_error ? ": " + assessment.last_error : "") + ".",
      skipped: "No assessment was made for this escalation.",
    }[assessment.status] || "";
    setText($("assessment-state"), stateText);
    show($("assessment-state"), !ready);
    if (!ready) return;
    setText($("assessment-summary"), assessment.summary || "");
    let confidence = Number(assessment.confidence);
    const known = assessment.confidence != null && Number.isFinite(confidence);
    if (known && confidence <= 1) confidence *= 100;
    const percent = known ? Math.max(0, Math.min(100, Math.round(confidence))) : null;
    setText($("assessment-confidence"), percent == null ? "—" : percent + "%");
    $("assessment-confidence-bar").style.width = (percent || 0) + "%";
    fillList($("assessment-causes"), assessment.likely_causes, "None given.");
    fillList($("assessment-steps"), assessment.next_steps, "None given.");
    const source = [assessment.provider, assessment.model].filter(Boolean).join(" · ");
    setText($("assessment-provider"), source ? "Assessed by " + source + "." : "");
  }

  function fillList(list, values, empty) {
    list.replaceChildren();
    const items = values && values.length ? values : [empty];
    for (const value of items) list.append(make("li", null, value));
  }

  function renderPsa(psa) {
    const [label, tone] = PSA_BADGES[psa.status] || [psa.status, "muted"];
    badge($("psa-badge"), label, tone);
    setText($("psa-status"), PSA_STATUS_TEXT[psa.status] || psa.status);
    setText($("psa-ticket"), psa.ticket_id || "—");
    setText($("psa-note"), psa.note_id || "—");
    setText($("psa-attempts"), psa.attempts == null ? "—" : psa.attempts);
    setText($("psa-error"), psa.last_error || "—");
  }

  function renderDeliveries(items) {
    const body = $("deliveries-rows");
    body.replaceChildren();
    for (const delivery of items) {
      const row = make("tr");
      row.dataset.channel = delivery.channel;
      const channel = CHANNELS[delivery.channel] || delivery.channel;
      row.append(make("td", null, delivery.purpose === "reminder" ? channel + " (reminder)" : channel));
      row.append(make("td", "cell-wrap", recipientText(delivery)));
      const statusCell = make("td");
      const [label, tone] = DELIVERY_BADGES[delivery.status] || [delivery.status, "muted"];
      const statusBadge = make("span");
      badge(statusBadge, label, tone);
      statusCell.append(statusBadge);
      row.append(statusCell);
      row.append(make("td", "cell-number", delivery.attempts));
      row.append(make("td", "cell-wrap", delivery.last_error || "—"));
      const settled = ["sent", "skipped", "dead"].includes(delivery.status);
      for (const iso of [settled ? null : delivery.next_attempt_at, delivery.sent_at]) {
        const cell = make("td");
        const when = make("time");
        setTime(when, iso);
        cell.append(when);
        row.append(cell);
      }
      body.append(row);
    }
    show($("deliveries-empty"), items.length === 0);
  }

  function recipientText(delivery) {
    if (delivery.channel === "psa" && delivery.recipient === "psa") {
      const ticket = state.handoff && state.handoff.psa && state.handoff.psa.ticket_id;
      return ticket ? "Ticket " + ticket : "The session's PSA ticket";
    }
    if (delivery.channel === "assessment" && delivery.recipient === "assessment") {
      return "AI provider";
    }
    if (delivery.channel === "chat" && delivery.recipient === "chat") return "The team's channel";
    return delivery.recipient;
  }

  // ---- team settings (admins and owners) -----------------------------------------------------

  /** The first field message of a validation error, else its message. */
  function fieldMessage(error, field) {
    const details = error.details && error.details[field];
    const first = Array.isArray(details) ? details[0] : null;
    return sentence(typeof first === "string" ? first : error.message);
  }

  function fillChat(chat) {
    $("chat-provider").value = chat.provider;
    $("chat-url").value = "";
    $("chat-url").placeholder = chat.webhook_url_set ? "Saved; enter a new URL to replace it" : "https://…";
    setText($("chat-url-state"), chat.webhook_url_set ? "A webhook URL is saved." : "No webhook URL saved.");
  }

  async function showSettings() {
    showView("settings-view");
    setBaseTitle("Team settings · " + APP_TITLE);
    for (const id of ["chat-error", "chat-saved", "policy-error", "policy-saved"]) setText($(id), "");
    show($("settings-error"), false);
    $("settings-title").focus();
    const [chat, policy] = await Promise.allSettled([
      api("GET", "/account/chat"), api("GET", "/account/escalation-policy"),
    ]);
    if (chat.status === "fulfilled") fillChat(chat.value);
    if (policy.status === "fulfilled") $("policy-minutes").value = policy.value.remind_after_minutes;
    const failed = [chat, policy].find((result) => result.status === "rejected");
    if (failed && failed.reason.status !== 401) {
      setText($("settings-error"), sentence(failed.reason.message));
      show($("settings-error"), true);
    }
  }

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const provider = $("chat-provider").value;
    const url = $("chat-url").value.trim();
    setText($("chat-error"), "");
    setText($("chat-saved"), "");
    if (provider !== "none" && !url) {
      setText($("chat-error"), "Enter the channel's webhook URL.");
      $("chat-url").focus();
      return;
    }
    const button = $("chat-save");
    button.disabled = true;
    try {
      const body = provider === "none" ? { provider } : { provider, webhook_url: url };
      fillChat(await api("PUT", "/account/chat", body));
      setText($("chat-saved"), provider === "none" ? "Chat messages are off." : "Saved.");
    } catch (error) {
      setText($("chat-error"), fieldMessage(error, "webhook_url"));
    } finally {
      button.disabled = false;
    }
  });

  $("policy-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setText($("policy-error"), "");
    setText($("policy-saved"), "");
    const raw = $("policy-minutes").value.trim();
    const minutes = Number(raw);
    if (raw === "" || !Number.isInteger(minutes) || minutes < 0 || minutes > 1440) {
      setText($("policy-error"), "Enter a whole number of minutes from 0 to 1440.");
      $("policy-minutes").focus();
      return;
    }
    const button = $("policy-save");
    button.disabled = true;
    try {
      const policy = await api("PUT", "/account/escalation-policy", { remind_after_minutes: minutes });
      $("policy-minutes").value = policy.remind_after_minutes;
      setText($("policy-saved"), policy.remind_after_minutes === 0 ? "Reminders are off."
        : "Saved: a reminder after " + policy.remind_after_minutes + " min.");
    } catch (error) {
      setText($("policy-error"), fieldMessage(error, "remind_after_minutes"));
    } finally {
      button.disabled = false;
    }
  });

  // ---- views, login and logout ---------------------------------------------------------------

  function showView(id) {
    for (const view of ["login-view", "queue-view", "handoff-view", "settings-view"]) {
      show($(view), view === id);
    }
  }

  function route() {
    if (!state.token) {
      showLogin();
      return;
    }
    const match = /^#handoff-(\d+)$/.exec(location.hash);
    if (match) {
      showHandoff(Number(match[1]));
      return;
    }
    if (location.hash === "#settings" && isAdmin()) {
      showSettings();
      return;
    }
    const wasHidden = $("queue-view").hidden;
    state.handoffId = null;
    state.notice = null;
    showView("queue-view");
    setBaseTitle(APP_TITLE);
    if (wasHidden && location.hash === "#queue") $("queue-title").focus();
  }

  window.addEventListener("hashchange", route);

  function showLogin(message, tone) {
    showView("login-view");
    setBaseTitle("Sign in · " + APP_TITLE);
    show($("account"), false);
    setConnection("idle");
    const line = $("login-error");
    setText(line, message || "");
    line.className = tone === "info" ? "form-info" : "form-error";
  }

  function saveSession() {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ token: state.token, user: state.user }));
    } catch (_) {
      // private browsing may refuse storage: the page still works until it is reloaded
    }
  }

  function loadSession() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      return saved && saved.token && saved.user ? saved : null;
    } catch (_) {
      return null;
    }
  }

  function startSession() {
    setText($("account-name"), state.user.name);
    setText($("account-role"), state.user.role);
    show($("account"), true);
    show($("settings-link"), isAdmin());
    show($("queue-loading"), true);
    state.ageTimer = setInterval(refreshAges, AGE_TICK_MS);
    if (isSenior()) connectStream();
    else startPolling();
  }

  /** Forget everything of the session; answers still on their way are ignored. */
  function stopSession() {
    state.generation += 1;
    if (state.stream) state.stream.abort();
    state.stream = null;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.pollTimer);
    clearInterval(state.ageTimer);
    clearTimeout(state.handoffRefresh);
    Object.assign(state, {
      token: null, user: null, items: new Map(), rows: new Map(), gone: new Set(),
      touched: new Map(), changes: 0, nextCursor: null, loaded: false, loading: null,
      lastEventId: null, retries: 0, lostAnnounced: false, reconnectTimer: null,
      pollTimer: null, ageTimer: null, handoffId: null, handoff: null, handoffRefresh: null,
      notice: null,
    });
    stopFlash();
    $("queue-list").replaceChildren();
    queueError(null);
    updateSummary();
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      // nothing stored
    }
  }

  function sessionEnded(message) {
    stopSession();
    showLogin("Your session has ended (" + message + "). Please sign in again.");
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = $("login-email").value.trim();
    const password = $("login-password").value;
    const error = $("login-error");
    error.className = "form-error";
    if (!email || !password) {
      setText(error, "Enter your email and password.");
      (email ? $("login-password") : $("login-email")).focus();
      return;
    }
    const button = $("login-submit");
    button.disabled = true;
    setText(button, "Signing in…");
    setText(error, "");
    try {
      const answer = await api("POST", "/auth/login", { email, password });
      state.token = answer.access_token;
      state.user = answer.user;
      saveSession();
      $("login-password").value = "";
      startSession();
      route();
      if ($("queue-view").hidden === false) $("queue-title").focus();
    } catch (failure) {
      setText(error, sentence(failure.message));
      $("login-password").focus();
    } finally {
      button.disabled = false;
      setText(button, "Sign in");
    }
  });

  $("logout").addEventListener("click", async () => {
    const button = $("logout");
    button.disabled = true;
    try {
      await api("POST", "/auth/logout");
    } catch (_) {
      // the token is forgotten here either way
    }
    button.disabled = false;
    stopSession();
    history.replaceState(null, "", location.pathname);
    showLogin("You have signed out.", "info");
    $("login-email").focus();
  });

  $("load-more").addEventListener("click", loadMore);

  $("handoff-claim").addEventListener("click", () => {
    if (state.handoffId) claim(state.handoffId, $("handoff-claim"), $("handoff-claim-error"));
  });

  async function boot() {
    const saved = loadSession();
    if (!saved) {
      route();
      return;
    }
    state.token = saved.token;
    state.user = saved.user;
    try {
      state.user = await api("GET", "/me");
      saveSession();
    } catch (error) {
      if (!state.token) return; // a 401 already showed the login form
    }
    startSession();
    route();
  }

  // For tests and the curious: the SSE parser the live queue uses.
  window.EscalationQueue = Object.freeze({ SseParser });

  boot();
})();
