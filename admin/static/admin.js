// callwright admin: seek the recording from the transcript, confirm deletions, follow live calls.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  setUpConfirmations();
  setUpPlayer();
  setUpLive();
});

function setUpConfirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

function setUpPlayer() {
  const audio = document.getElementById("recording");
  if (!audio) return;
  const turns = [...document.querySelectorAll(".turns .turn[data-start]")];
  const seek = (ms) => {
    audio.currentTime = ms / 1000;
    audio.play().catch(() => {}); // a browser may refuse to autoplay; the seek still holds
  };
  for (const button of document.querySelectorAll("button[data-seek]")) {
    button.addEventListener("click", () => seek(Number(button.dataset.seek)));
  }
  // A click anywhere on a line's text seeks too (the time button is the keyboard way).
  for (const turn of turns) {
    turn.querySelector(".said")?.addEventListener("click", () => seek(Number(turn.dataset.start)));
  }
  audio.addEventListener("timeupdate", () => {
    const ms = audio.currentTime * 1000;
    for (const turn of turns) {
      const on = ms >= Number(turn.dataset.start) && ms < Number(turn.dataset.end);
      turn.classList.toggle("playing", on);
      if (on) turn.setAttribute("aria-current", "true");
      else turn.removeAttribute("aria-current");
    }
  });
}

function clock(ms) {
  const s = Math.max(ms, 0) / 1000;
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function setUpLive() {
  const root = document.getElementById("live");
  if (!root) return;
  const status = document.getElementById("live-status");
  const empty = document.getElementById("no-live");
  const base = root.dataset.base;
  const refreshEmpty = () => { empty.hidden = root.querySelector(".live-call") !== null; };

  const callSection = (call) => {
    let section = document.getElementById(`live-${call.id}`);
    if (section) return section;
    section = element("section", {class: "card live-call", id: `live-${call.id}`,
                                  "aria-labelledby": `live-${call.id}-h`});
    const heading = element("h2", {id: `live-${call.id}-h`});
    heading.append(element("a", {href: `${base}/calls/${call.id}`}, call.from_number || "unknown"));
    heading.append(" ", element("span", {class: "sub"},
      `since ${call.started_at ? new Date(call.started_at).toLocaleTimeString() : "now"}`));
    section.append(heading, element("ol", {class: "turns", "aria-live": "polite"}));
    root.prepend(section);
    refreshEmpty();
    return section;
  };

  const source = new EventSource(root.dataset.events);
  source.addEventListener("open", () => { status.textContent = "Live: updates as calls happen."; });
  source.addEventListener("error", () => { status.textContent = "Reconnecting to live updates…"; });
  source.addEventListener("call", (event) => callSection(JSON.parse(event.data)));
  source.addEventListener("turn", (event) => {
    const turn = JSON.parse(event.data);
    const list = callSection({id: turn.call_id}).querySelector("ol.turns");
    if (list.querySelector(`[data-seq="${turn.seq}"]`)) return;
    const item = element("li", {class: `turn ${turn.speaker}${turn.interrupted ? " cut" : ""}`,
                                "data-seq": String(turn.seq)});
    const head = element("div", {class: "turn-head"});
    const who = turn.speaker === "agent" ? "Agent" : turn.label[0].toUpperCase() + turn.label.slice(1);
    head.append(element("span", {class: "who"}, who), " ",
                element("span", {class: "time"}, clock(turn.start_ms)));
    if (turn.latency_ms !== null) {
      head.append(" ", element("span", {class: "latency"}, `voice-to-voice ${turn.latency_ms} ms`));
    }
    if (turn.interrupted) head.append(" ", element("span", {class: "badge warn"}, "interrupted"));
    item.append(head, element("p", {class: "said"}, turn.text));
    list.append(item);
  });
  source.addEventListener("ended", (event) => {
    const ended = JSON.parse(event.data);
    const section = document.getElementById(`live-${ended.id}`);
    if (!section) return;
    section.classList.add("ended");
    section.querySelector("h2 .sub").textContent += ` · ended (${ended.end_reason || ended.status})`;
    setTimeout(() => { section.remove(); refreshEmpty(); }, 15000);
  });
}
