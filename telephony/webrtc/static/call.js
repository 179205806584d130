// The call page: one RTCPeerConnection to callwright's /webrtc/offer, events on a data channel.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  flow: $("flow"), call: $("call"), hangup: $("hangup"), state: $("state"), mic: $("mic"),
  sid: $("sid"), error: $("error"), transcript: $("transcript"), remote: $("remote"),
};
let config = { ice_servers: [], flows: ["default"] };
let call = null; // { pc, stream, pcId, pending: [], agentLine }

function setState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function line(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  if (kind === "caller" || kind === "agent") {
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = kind === "caller" ? "You" : "Agent";
    li.append(who, document.createElement("br"));
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(body);
  ui.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function agentLine() {
  if (!call.agentLine) {
    call.agentLine = line("agent", "speaking…");
    call.agentLine.classList.add("pending");
  }
  return call.agentLine;
}

function onEvent(message) {
  if (message.type === "signalling" && message.message?.type === "peerLeft") {
    end("The agent hung up.");
    return;
  }
  if (message.type !== "callwright") return;
  switch (message.event) {
    case "state":
      setState(message.state);
      if (message.state === "speaking") agentLine();
      break;
    case "caller-speech":
      ui.mic.textContent = message.active ? "caller speaking" : "caller silent";
      ui.mic.classList.toggle("active", message.active);
      break;
    case "latency": {
      const tag = document.createElement("span");
      tag.className = "latency";
      tag.textContent = `voice-to-voice ${message.ms} ms`;
      agentLine().querySelector(".who").after(tag);
      break;
    }
    case "turn":
      if (message.speaker === "caller") {
        // The server reports the caller's words once the reply to them is heard (they may
        // yet go on), so that reply's line is usually up already: they go above it.
        const li = line("caller", message.text);
        if (call.agentLine) call.agentLine.before(li);
      } else {
        const li = agentLine();
        call.agentLine = null;
        li.classList.remove("pending");
        li.querySelector(".text").textContent =
          message.text || "(interrupted before any words were heard)";
        if (message.interrupted) {
          const cut = document.createElement("span");
          cut.className = "cut";
          cut.textContent = "interrupted";
          li.querySelector(".who").after(cut);
        }
      }
      break;
  }
}

async function signal(method, body) {
  const response = await fetch("/webrtc/offer", {
    method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || `${method} /webrtc/offer: ${response.status}`);
  return data;
}

function sendCandidates(candidates) {
  signal("PATCH", { pc_id: call.pcId, candidates }).catch((e) => console.warn(e));
}

async function start() {
  showError("");
  ui.call.disabled = true;
  ui.flow.disabled = true;
  ui.transcript.replaceChildren();
  setState("connecting");
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const pc = new RTCPeerConnection({ iceServers: config.ice_servers });
    call = { pc, stream, pcId: null, pending: [], agentLine: null };
    // pipecat maps the first transceiver to the microphone.
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendrecv", streams: [stream] });
    const events = pc.createDataChannel("events");
    events.onmessage = (e) => onEvent(JSON.parse(e.data));
    pc.ontrack = (e) => { ui.remote.srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onicecandidate = (e) => {
      const c = e.candidate
        ? { candidate: e.candidate.candidate, sdp_mid: e.candidate.sdpMid,
            sdp_mline_index: e.candidate.sdpMLineIndex }
        : { candidate: "", sdp_mid: null, sdp_mline_index: null };
      if (call && call.pc === pc && call.pcId) sendCandidates([c]);
      else if (call && call.pc === pc) call.pending.push(c);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") end("The connection failed.");
      else if (pc.connectionState === "closed" && call?.pc === pc) end("The call ended.");
    };
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await signal("POST", {
      sdp: pc.localDescription.sdp, type: "offer", requestData: { flow: ui.flow.value },
    });
    if (!call || call.pc !== pc) return; // hung up while waiting
    call.pcId = answer.pc_id;
    ui.sid.textContent = answer.call_sid;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    if (call.pending.length) sendCandidates(call.pending.splice(0));
    ui.hangup.disabled = false;
  } catch (e) {
    end("");
    showError(`Could not start the call: ${e.message}`);
  }
}

function end(note) {
  if (!call) return;
  const { pc, stream } = call;
  call = null;
  pc.close();
  stream.getTracks().forEach((t) => t.stop());
  ui.remote.srcObject = null;
  ui.call.disabled = false;
  ui.flow.disabled = false;
  ui.hangup.disabled = true;
  ui.mic.textContent = "caller silent";
  ui.mic.classList.remove("active");
  setState("idle");
  if (note) line("note", note);
}

async function init() {
  try {
    config = await (await fetch("/webrtc/config")).json();
  } catch (e) {
    showError(`Could not load the call settings: ${e.message}`);
  }
  for (const name of config.flows) ui.flow.add(new Option(name, name));
  ui.call.onclick = start;
  ui.hangup.onclick = () => end("You hung up.");
}

init();
