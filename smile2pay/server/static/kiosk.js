// smile2pay kiosk: camera -> WebSocket /v1/stream -> prompts, face box, AU bars, result.
// Plain JS, no build step, no external resources (the till may be offline).
// Configure once with the URL fragment: /kiosk#key=API_KEY&user=USER_ID[&require=AU6%2BAU12&timeout=15&fps=10]
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const cfg = {
    key: params.get("key") || "",
    user: params.get("user") || "",
    require: params.get("require") || "AU6+AU12",
    timeout: parseFloat(params.get("timeout") || "15"),
    fps: Math.min(30, Math.max(1, parseFloat(params.get("fps") || "10"))),
    quality: parseFloat(params.get("jpeg") || "0.85"),
  };
  const MESSAGES = {
    WAITING_FOR_FACE: "Look at the camera",
    HOLD_NEUTRAL: "Hold still, neutral face",
    SMILE_NOW: "Now smile",
    APPROVED: "Payment approved",
    DECLINED: "Payment declined",
  };
  const video = $("video"), overlay = $("overlay");
  const grab = document.createElement("canvas");
  let ws = null, timer = null, stream = null, lastUpdate = null, sending = false;
  window.smile2pay = { history: [], final: null };   // read by the browser test

  function setState(state, prompt) {
    document.body.dataset.state = state;
    $("state").textContent = state;
    $("prompt").textContent = prompt || MESSAGES[state] || state;
  }

  function bars(u) {
    const box = $("bars");
    const aus = Object.keys(u.thresholds || {});
    for (const au of aus) {
      let el = document.getElementById("bar-" + au);
      if (!el) {
        el = document.createElement("div");
        el.className = "bar"; el.id = "bar-" + au;
        el.innerHTML = '<div class="fill"></div><div class="thr"></div><span class="name"></span><span class="val"></span>';
        box.appendChild(el);
      }
      const p = (u.au || {})[au];
      const thr = u.thresholds[au];
      el.querySelector(".fill").style.width = ((p || 0) * 100).toFixed(1) + "%";
      el.querySelector(".thr").style.left = (thr * 100).toFixed(1) + "%";
      el.querySelector(".name").textContent = au;
      el.querySelector(".val").textContent = p == null ? "–" : p.toFixed(2);
      el.classList.toggle("on", p != null && p >= thr);
    }
    $("identity").textContent = u.identity_score == null ? "–"
      : u.identity_score.toFixed(2) + " (threshold " + (u.identity_threshold || 0).toFixed(2) + ")";
  }

  function drawBox(u) {
    const w = (u.image_size || [grab.width, grab.height])[0], h = (u.image_size || [grab.width, grab.height])[1];
    overlay.width = w; overlay.height = h;
    const g = overlay.getContext("2d");
    g.clearRect(0, 0, w, h);
    if (!u.box) return;
    const [x1, y1, x2, y2] = u.box;
    g.lineWidth = Math.max(2, w / 200);
    g.strokeStyle = u.state === "SMILE_NOW" ? "#f5c542" : (u.state === "APPROVED" ? "#2fb463" : "#3a8ee6");
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }

  function showResult(u) {
    const d = u.decision || {};
    const el = $("result");
    el.hidden = false;
    el.className = d.approved ? "approved" : "declined";
    el.dataset.approved = d.approved ? "true" : "false";
    el.innerHTML = "";
    const head = document.createElement("div");
    head.textContent = d.approved ? "Payment approved" : "Payment declined";
    el.appendChild(head);
    const small = document.createElement("small");
    small.textContent = d.approved ? ("reference " + (d.request_id || "")) : ("reasons: " + (d.reasons || []).join(", "));
    el.appendChild(small);
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

  function stop() {
    if (timer) { clearInterval(timer); timer = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "started") {
      setState("WAITING_FOR_FACE");
      timer = setInterval(sendFrame, 1000 / cfg.fps);
    } else if (m.type === "update" || m.type === "final") {
      lastUpdate = m;
      window.smile2pay.history.push({ state: m.state, t: m.t, au: m.au, reasons: m.reasons });
      let prompt = m.prompt;
      const rs = m.reasons || [];
      if (m.type === "update") {
        if (rs.includes("SECOND_FACE")) prompt += " (one person only, please)";
        else if (rs.includes("IDENTITY_MISMATCH") && m.state === "WAITING_FOR_FACE") prompt = "Face not recognised";
        else if (rs.includes("LOW_QUALITY")) prompt += " (move closer, face the light)";
      }
      setState(m.state, prompt);
      bars(m); drawBox(m);
      if (m.type === "final") {
        window.smile2pay.final = m.decision;
        showResult(m);
        stop();
      }
    } else if (m.type === "error") {
      window.smile2pay.final = { approved: false, reasons: [m.error.code], error: m.error };
      setState("DECLINED", "Error: " + m.error.message);
      $("result").hidden = false; $("result").className = "declined";
      $("result").textContent = m.error.code + ": " + m.error.message;
      stop();
    }
  }

  async function start() {
    $("setup").hidden = true; $("again").hidden = true; $("result").hidden = true;
    window.smile2pay.history = []; window.smile2pay.final = null;
    $("who").textContent = cfg.user;
    setState("STARTING", "Starting the camera…");
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      setState("DECLINED", "No camera: " + e.message);
      window.smile2pay.final = { approved: false, reasons: ["NO_CAMERA"] };
      return;
    }
    video.srcObject = stream;
    await video.play().catch(() => {});
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(proto + location.host + "/v1/stream");
    ws.onopen = () => {
      const nonce = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
      ws.send(JSON.stringify({ type: "start", api_key: cfg.key, user_id: cfg.user, require: cfg.require,
                               nonce: nonce, options: { timeout_s: cfg.timeout } }));
    };
    ws.onmessage = onMessage;
    ws.onclose = () => { stop(); if (!window.smile2pay.final) setState("DECLINED", "Connection closed"); };
  }

  $("setup").addEventListener("submit", (e) => {
    e.preventDefault();
    cfg.user = $("f-user").value; cfg.key = $("f-key").value;
    start();
  });
  $("again").addEventListener("click", () => start());
  if (cfg.key && cfg.user) start(); else { $("setup").hidden = false; setState("IDLE", "Enter the user and API key"); }
})();
