// Listening test page: one set at a time; a set is submitted only when every slider has been moved.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { rater: "", sets: [], index: 0 };

function say(text, kind) {
  $("message").textContent = text;
  $("message").className = kind || "";
}

function show(view) {
  for (const v of ["start-view", "set-view", "done-view"]) $(v).hidden = v !== view;
}

function clipRow(clip, i) {
  const li = document.createElement("li");
  li.className = "clip unmoved";
  const h = document.createElement("h3");
  h.textContent = "Clip " + String.fromCharCode(65 + (i % 26)) + (i >= 26 ? Math.floor(i / 26) : "");
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "none";
  audio.src = clip.url;
  const row = document.createElement("div");
  row.className = "rating";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "0";
  slider.max = "100";
  slider.step = "1";
  slider.value = "50";
  slider.dataset.clip = clip.clip;
  slider.dataset.moved = "false";
  slider.setAttribute("aria-label", h.textContent + " rating");
  const out = document.createElement("output");
  out.textContent = "--";
  slider.addEventListener("input", () => {
    slider.dataset.moved = "true";
    li.classList.remove("unmoved");
    out.textContent = slider.value;
  });
  const lo = document.createElement("span");
  lo.textContent = "0 bad";
  const hi = document.createElement("span");
  hi.textContent = "100 excellent";
  row.append(lo, slider, hi, out);
  li.append(h, audio, row);
  return li;
}

function renderSet() {
  if (state.index >= state.sets.length) {
    show("done-view");
    return;
  }
  const s = state.sets[state.index];
  $("progress").textContent = "Set " + (state.index + 1) + " of " + state.sets.length;
  $("caption").textContent = s.caption;
  $("clips").replaceChildren(...s.clips.map(clipRow));
  $("submit").disabled = false;
  show("set-view");
  window.scrollTo(0, 0);
}

async function start() {
  const rater = $("rater").value.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$/.test(rater)) {
    say("Please enter a rater name: 1-40 letters, digits, '_', '.', '-'.", "error");
    return;
  }
  const r = await fetch("api/kit?rater=" + encodeURIComponent(rater));
  const kit = await r.json();
  if (!r.ok) {
    say(kit.error || "Could not load the kit.", "error");
    return;
  }
  state.rater = rater;
  state.sets = kit.sets.filter((s) => !kit.done.includes(s.set));
  state.index = 0;
  say(kit.done.length ? "Welcome back: " + kit.done.length + " set(s) already saved." : "", "ok");
  renderSet();
}

async function submit() {
  const sliders = [...document.querySelectorAll("#clips input[type=range]")];
  const left = sliders.filter((s) => s.dataset.moved !== "true").length;
  if (left > 0) {
    say("Please move every slider before submitting (" + left + " clip(s) not rated yet).", "error");
    return;
  }
  const body = {
    rater: state.rater,
    set: state.sets[state.index].set,
    ratings: sliders.map((s) => ({ clip: s.dataset.clip, rating: Number(s.value) })),
  };
  $("submit").disabled = true;
  let r, res;
  try {
    r = await fetch("api/ratings", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    res = await r.json();
  } catch (e) {
    say("Could not reach the server; your ratings are still on the page, try again.", "error");
    $("submit").disabled = false;
    return;
  }
  if (!r.ok && r.status !== 409) {
    say(res.error || "The server refused the ratings.", "error");
    $("submit").disabled = false;
    return;
  }
  say(r.status === 409 ? "This set was already saved." : "Saved set " + (state.index + 1) + ".", "ok");
  state.index += 1;
  renderSet();
}

document.addEventListener("DOMContentLoaded", () => {
  fetch("kit.json").then((r) => r.json()).then((kit) => {
    $("title").textContent = kit.title;
    document.title = kit.title;
    $("instructions").textContent = kit.instructions;
  });
  $("start").addEventListener("click", start);
  $("rater").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
  $("submit").addEventListener("click", submit);
});
