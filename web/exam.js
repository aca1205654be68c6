// The demo exam page: what an LMS page does with the student client library.
import { StudentClient } from "/client/student.js";

const params = new URLSearchParams(location.search);
// An LMS launch hands the token over in the fragment (#token=...), which the browser never
// sends to a server; kept for this tab so a reload resumes, then cleared from the address bar.
const handed = new URLSearchParams(location.hash.slice(1)).get("token") || params.get("token");
if (handed) {
  sessionStorage.setItem("exam:token", handed);
  const clean = new URLSearchParams(params);
  clean.delete("token");
  history.replaceState(null, "", `${location.pathname}${clean.size ? `?${clean}` : ""}`);
}
const token = handed || sessionStorage.getItem("exam:token");
const wsUrl = params.get("ws") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const TOTAL = 20;
const $ = (id) => document.getElementById(id);
let question = 1;
let answered = 0;
let submitted = false;

function show(kind, text) {
  const item = document.createElement("div");
  item.className = `msg ${kind}`;
  item.textContent = text;
  $("messages").append(item);
}

function setPaused(paused, reason = "") {
  $("paused").hidden = !paused;
  $("pause-reason").textContent = reason;
  document.querySelectorAll("main button").forEach((b) => (b.disabled = paused || submitted));
}

const client = new StudentClient({
  url: wsUrl,
  token,
  awayDebounceMs: Number(params.get("debounce") ?? 1500),
  onMessage: (text) => show("message", `Proctor: ${text}`),
  onAnnouncement: (text) => show("announcement", `Announcement: ${text}`),
  onPause: (reason) => setPaused(true, reason),
  onResume: () => setPaused(false),
  onTimeExtended: (seconds) => seconds > 0 && show("announcement", `Time extended by ${Math.round(seconds / 60)} min`),
  onConnectionChange: (state) => {
    $("connection").textContent = state;
    $("connection").className = `conn ${state}`;
  },
});
window.examClient = client;

function renderQuestion() {
  $("question").textContent = submitted ? "Submitted. You may close this page." : `Question ${question} of ${TOTAL}`;
  $("choices").replaceChildren(
    ...(submitted ? [] : ["A", "B", "C", "D"].map((choice) => {
      const b = document.createElement("button");
      b.textContent = `Choice ${choice}`;
      b.onclick = () => pick(choice);
      return b;
    })),
  );
  setPaused(client.paused);
}

function reportProgress() {
  const left = client.remainingMs();
  client.progress({
    question_current: question, answered, total: TOTAL,
    time_remaining_s: left === null ? null : Math.floor(left / 1000),
  });
}

function pick(choice) {
  if (client.paused || submitted) return;
  client.answer(question, choice);
  answered = Math.max(answered, question);
  question = Math.min(TOTAL, question + 1);
  reportProgress();
  renderQuestion();
}

$("submit").onclick = () => {
  if (client.paused || submitted) return;
  submitted = true;
  client.submit(Math.round((answered / TOTAL) * 100));
  renderQuestion();
};

setInterval(() => {
  const left = client.remainingMs();
  if (left === null) return;
  const s = Math.floor(left / 1000);
  $("timer").textContent = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}, 250);

client.start();
renderQuestion();
reportProgress();
