// smile2pay kiosk: camera -> WebSocket /v1/stream -> prompts, progress, face box, outcome.
// Plain JS, no build step, no external resources (the till may be offline).
//
// Two views: the shopper view (default: prompts in big words, progress, a friendly outcome; no scores,
// no AU bars, no reason codes) and the operator view (/kiosk?operator=1: the engineering data too).
//
// The credential (the kiosk key, or a short-lived token from POST /v1/kiosk/token) is entered once on
// the device and kept in this browser's localStorage: never in the URL, never in the page. Other
// settings may come in the URL fragment: /kiosk#user=USER_ID[&require=AU6%2BAU12&timeout=15&fps=10&challenge=1]
// (a legacy #key=... is moved into localStorage and removed from the address bar at once).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const STORE_KEY = "smile2pay.kiosk.credential", STORE_USER = "smile2pay.kiosk.user";
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(location.search);
  const store = {
    get(k) { try { return localStorage.getItem(k) || ""; } catch (e) { return ""; } },
    set(k, v) { try { if (v) localStorage.setItem(k, v); else localStorage.removeItem(k); } catch (e) { /* private mode */ } },
  };
  if (params.has("key")) {                  // legacy link: keep the key on the device, drop it from the URL
    store.set(STORE_KEY, params.get("key"));
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  const operator = ["1", "true", "yes"].includes((query.get("operator") || params.get("operator") || "").toLowerCase());
  const cfg = {
    user: params.get("user") || store.get(STORE_USER),
    require: params.get("require") || "AU6+AU12",
    timeout: parseFloat(params.get("timeout") || "15"),
    fps: Math.min(30, Math.max(1, parseFloat(params.get("fps") || "10"))),
    quality: parseFloat(params.get("jpeg") || "0.85"),
    challenge: ["1", "true"].includes(params.get("challenge") || ""),
  };
  // what the shopper reads, state by state
  const PROMPTS = {
    IDLE: "This till is not set up yet",
    STARTING: "Starting the camera…",
    CONNECTING: "Getting ready…",
    WAITING_FOR_FACE: "Look at the camera",
    HOLD_NEUTRAL: "Hold still, relaxed face",
    SMILE_NOW: "Now smile!",
    RELAX: "Now relax",
    APPROVED: "Payment approved",
    DECLINED: "Payment not approved",
  };
  const STEP = { WAITING_FOR_FACE: 0, HOLD_NEUTRAL: 1, SMILE_NOW: 2, RELAX: 2, APPROVED: 4, DECLINED: 4 };
  // reason codes -> a few shopper messages (first match wins); the codes themselves are for the operator
  const SORRY = [
    [["IDENTITY_MISMATCH", "GALLERY_USER_NOT_FOUND", "NOT_ENROLLED"],
     "We could not confirm it's you — please try again or pay another way."],
    [["SECOND_FACE", "MULTIPLE_FACES"], "Only one person in front of the camera, please — try again."],
    [["NO_FACE", "TRACK_LOST", "LOW_QUALITY", "FRAME_UNREADABLE", "NO_CAMERA"],
     "We could not see your face clearly — face the camera in good light and try again, or pay another way."],
    [["TIMEOUT", "WINDOW_EXPIRED", "NO_ONSET", "NOT_NEUTRAL", "LIVENESS_FAILED", "CHALLENGE_FAILED", "NO_SMILE"],
     "We didn't catch the smile in time — please try again or pay another way."],
    [["UNAUTHORIZED", "TOKEN_EXPIRED", "FORBIDDEN", "RATE_LIMITED", "BUSY", "REPLAY", "CONNECTION", "INTERNAL"],
     "Smile to pay is not available on this till right now — please pay another way."],
  ];
  const SORRY_DEFAULT = "We could not complete the payment — please try again or pay another way.";
  const HINTS = { SECOND_FACE: "One person only, please", LOW_QUALITY: "Move closer and face the light",
                  IDENTITY_MISMATCH: "Look straight at the camera" };

  const video = $("video"), overlay = $("overlay");
  const grab = document.createElement("canvas");
  let ws = null, timer = null, tick = null, stream = null, sending = false, startedAt = 0;
  window.smile2pay = { history: [], final: null, view: operator ? "operator" : "shopper" };   // read by the browser tests
  document.body.dataset.view = operator ? "operator" : "shopper";
  $("meters").hidden = !operator;

  function shopperMessage(reasons) {
    for (const [codes, text] of SORRY) if ((reasons || []).some((r) => codes.includes(r))) return text;
    return SORRY_DEFAULT;
  }

  function setState(state, prompt, hint) {
    document.body.dataset.state = state;
    $("prompt").textContent = prompt || PROMPTS[state] || "";
    $("hint").textContent = hint || "";
    const at = STEP[state] == null ? -1 : STEP[state];
    document.querySelectorAll("#steps li").forEach((li, i) => {
      li.classList.toggle("done", i < at);
      li.classList.toggle("active", i === at);
    });
    if (operator) $("state").textContent = state;
  }

  function meters(u) {           // operator view only: nothing of this is drawn for shoppers
    if (!operator) return;
    const box = $("bars");
    for (const au of Object.keys(u.thresholds || {})) {
      let el = document.getElementById("bar-" + au);
      if (!el) {
        el = document.createElement("div");
        el.className = "bar"; el.id = "bar-" + au;
        el.innerHTML = '<div class="fill"></div><div class="thr"></div><span class="name"></span><span class="val"></span>';
        box.appendChild(el);
      }
      const p = (u.au || {})[au], thr = u.thresholds[au];
      el.querySelector(".fill").style.width = ((p || 0) * 100).toFixed(1) + "%";
      el.querySelector(".thr").style.left = (thr * 100).toFixed(1) + "%";
      el.querySelector(".name").textContent = au;
      el.querySelector(".val").textContent = p == null ? "–" : p.toFixed(2);
      el.classList.toggle("on", p != null && p >= thr);
    }
    $("identity").textContent = u.identity_score == null ? "–"
      : u.identity_score.toFixed(2) + " (threshold " + (u.identity_threshold || 0).toFixed(2) + ")";
    const rs = (u.decision && u.decision.reasons) || u.reasons || [];
    $("reasons").textContent = rs.length ? rs.join(", ") : "–";
  }

  function clearBox() {
    const g = overlay.getContext("2d");
    g.clearRect(0, 0, overlay.width, overlay.height);
  }

  function drawBox(u) {
    const size = u.image_size || [grab.width, grab.height];
    overlay.width = size[0]; overlay.height = size[1];
    clearBox();
    if (!u.box || u.final) return;
    const [x1, y1, x2, y2] = u.box;
    const g = overlay.getContext("2d");
    g.lineWidth = Math.max(3, size[0] / 160);
    g.strokeStyle = u.state === "SMILE_NOW" ? "#f5c542" : (u.state === "RELAX" ? "#b48cf0" : "#3a8ee6");
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }

  function showResult(approved, reasons, requestId, error) {
    const el = $("result");
    el.hidden = false;
    el.className = approved ? "approved" : "declined";
    el.dataset.approved = approved ? "true" : "false";
    $("result-head").textContent = approved ? "Payment approved" : "Payment not approved";
    $("result-text").textContent = approved ? "Thank you!" : shopperMessage(reasons);
    $("result-ref").textContent = requestId ? "Reference " + requestId : "";
    if (operator) {
      $("rid").textContent = requestId || "–";
      $("reasons").textContent = error ? error.code + ": " + error.message : ((reasons || []).join(", ") || "–");
    }
    $("again").hidden = false;
  }

  function sendFrame() {
    if (!ws || ws.readyState !== WebSocket.OPEN || sending || !video.videoWidth) return;
    if (ws.bufferedAmount > 2 * 1024 * 1024) return;   // the network is behind: drop this frame
    grab.width = video.videoWidth; grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    sending = true;
    grab.toBlob((blob) => {
      sending = false;
      if (blob && ws && ws.readyState === WebSocket.OPEN) ws.send(blob);
    }, "image/jpeg", cfg.quality);
  }

  function stop() {               // the stream is over: no camera, no face box, no frozen frame
    if (timer) { clearInterval(timer); timer = null; }
    if (tick) { clearInterval(tick); tick = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    video.srcObject = null;
    clearBox();
    document.body.classList.add("ended");
  }

  function finish(approved, reasons, requestId, error) {
    window.smile2pay.final = error ? { approved: false, reasons: [error.code], error: error }
      : { approved: approved, reasons: reasons, request_id: requestId };
    stop();
    setState(approved ? "APPROVED" : "DECLINED");
    showResult(approved, reasons, requestId, error);
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "started") {
      startedAt = performance.now();
      if (operator) $("rid").textContent = m.request_id || "–";
      setState("WAITING_FOR_FACE");
      timer = setInterval(sendFrame, 1000 / cfg.fps);
      tick = setInterval(() => {
        const left = Math.max(0, 1 - (performance.now() - startedAt) / (cfg.timeout * 1000));
        $("timefill").style.width = (left * 100).toFixed(1) + "%";
      }, 100);
    } else if (m.type === "update") {
      window.smile2pay.history.push({ state: m.state, t: m.t, au: m.au, reasons: m.reasons });
      const rs = m.reasons || [];
      const hint = rs.map((r) => HINTS[r]).find((h) => h) || "";
      setState(m.state, null, m.state === "WAITING_FOR_FACE" || m.state === "HOLD_NEUTRAL" || rs.includes("SECOND_FACE") ? hint : "");
      meters(m); drawBox(m);
    } else if (m.type === "final") {
      window.smile2pay.history.push({ state: m.state, t: m.t, au: m.au, reasons: m.reasons });
      meters(m);
      const d = m.decision || {};
      finish(!!d.approved, d.reasons || [], d.request_id || null, null);
    } else if (m.type === "error") {
      finish(false, [m.error.code], null, m.error);
    }
  }

  async function start() {
    $("setup").hidden = true; $("again").hidden = true; $("result").hidden = true;
    document.body.classList.remove("ended");
    window.smile2pay.history = []; window.smile2pay.final = null;
    $("timefill").style.width = "100%";
    if (operator) { $("who").textContent = cfg.user; $("reasons").textContent = "–"; $("rid").textContent = "–"; }
    setState("STARTING");
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      finish(false, ["NO_CAMERA"], null, { code: "NO_CAMERA", message: String(e && e.message) });
      return;
    }
    video.srcObject = stream;
    await video.play().catch(() => {});
    setState("CONNECTING");
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(proto + location.host + "/v1/stream");
    ws.onopen = () => {
      const nonce = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
      const cred = store.get(STORE_KEY);
      const msg = { type: "start", user_id: cfg.user, require: cfg.require, nonce: nonce,
                    options: { timeout_s: cfg.timeout } };
      if (cfg.challenge) msg.options.challenge = true;
      if (cred.startsWith("s2pk_")) msg.token = cred; else msg.api_key = cred;
      ws.send(JSON.stringify(msg));
    };
    ws.onmessage = onMessage;
    ws.onclose = () => {
      if (!window.smile2pay.final) finish(false, ["CONNECTION"], null, { code: "CONNECTION", message: "connection closed" });
      else stop();
    };
  }

  function setup() {
    const needKey = !store.get(STORE_KEY);
    $("f-key").parentElement.hidden = !needKey;
    $("f-user").parentElement.hidden = !!cfg.user;
    $("f-key").required = needKey; $("f-user").required = !cfg.user;
    $("setup").hidden = false;
    setState("IDLE", needKey ? "Set up this till" : "Who is paying?");
  }

  $("setup").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("f-key").value) store.set(STORE_KEY, $("f-key").value.trim());
    if ($("f-user").value) { cfg.user = $("f-user").value.trim(); store.set(STORE_USER, cfg.user); }
    $("f-key").value = "";       // the key is not left in the page
    if (store.get(STORE_KEY) && cfg.user) start(); else setup();
  });
  $("again").addEventListener("click", () => start());
  $("forget").addEventListener("click", () => { store.set(STORE_KEY, ""); store.set(STORE_USER, ""); location.reload(); });
  if (store.get(STORE_KEY) && cfg.user) start(); else setup();
})();
