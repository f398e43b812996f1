/**
 * `GET /`: the server's page. One HTML document with its script inline (no build step, no
 * network beyond this server's API): teachers, jobs with live progress over each running job's
 * Server-Sent Events, workers, caches. With a token configured, the page asks for it, checks it
 * against `GET /v1/session` and shows nothing until it passes; it then sends it with every
 * request. Read-only, except for cancelling a job and verifying a cache. Everything from the
 * server is put in the page as text (textContent), never as markup.
 */
const SCRIPT = String.raw`
'use strict';
const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem('distillate-token') || '';
const headers = () => (token ? { authorization: 'Bearer ' + token } : {});
const api = async (path, init = {}) => {
  const res = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (res.status === 204) return null;
  const body = await res.json();
  if (!res.ok) throw Object.assign(new Error(body.error ? body.error.code + ': ' + body.error.message : res.statusText), { status: res.status });
  return body;
};
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'onclick') e.onclick = v;
    else if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === undefined || c === null ? '' : String(c)));
  return e;
}
function table(head, rows, cls) {
  const t = el('table', { class: cls });
  t.append(el('tr', {}, ...head.map((h) => el('th', {}, h))));
  for (const r of rows) t.append(r);
  return t;
}
const short = (s) => (s ? s.slice(0, 12) + '…' : '');
const age = (iso) => ((Date.now() - Date.parse(iso)) / 1000).toFixed(1) + ' s';
const bytes = (n) => (n >= 1 << 30 ? (n / (1 << 30)).toFixed(2) + ' GiB' : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : (n / 1024).toFixed(1) + ' KiB');
const eta = (s) => (!isFinite(s) ? '' : s < 90 ? s.toFixed(0) + ' s' : (s / 60).toFixed(1) + ' min');
const terminal = (s) => s === 'succeeded' || s === 'failed' || s === 'canceled';

const jobs = new Map(); // id → { job, rate, samples: [[t, done]] }
const following = new Set();

function jobRow(id) {
  const { job, rate } = jobs.get(id);
  const p = job.progress || { done: 0, total: 0 };
  const left = rate > 0 ? (p.total - p.done) / rate : NaN;
  const cancel = !terminal(job.state) ? el('button', { class: 'cancel', onclick: () => cancelJob(id) }, 'cancel') : '';
  return el(
    'tr',
    { class: 'job', 'data-id': id, 'data-state': job.state },
    el('td', {}, short(id)),
    el('td', {}, job.type),
    el('td', {}, job.teacher),
    el('td', {}, job.dataset),
    el('td', { class: 'state' }, job.state + (job.cacheHit ? ' (cache hit)' : '')),
    el('td', {}, el('progress', { max: p.total || 1, value: p.done }), ' ', el('span', { class: 'done' }, p.done + ' / ' + p.total)),
    el('td', { class: 'rate' }, rate > 0 && !terminal(job.state) ? rate.toFixed(0) : ''),
    el('td', { class: 'eta' }, terminal(job.state) ? '' : eta(left)),
    el('td', { class: 'error' }, job.error ? job.error.code + ': ' + job.error.message : ''),
    el('td', {}, cancel),
  );
}
function renderJobs() {
  const ids = [...jobs.keys()].sort((a, b) => (jobs.get(b).job.createdAt || '').localeCompare(jobs.get(a).job.createdAt || ''));
  $('#jobs').replaceChildren(table(['job', 'type', 'teacher', 'dataset', 'state', 'progress', 'rows/s', 'ETA', 'error', ''], ids.map(jobRow), 'jobs'));
}
function updateJob(job) {
  const prev = jobs.get(job.id);
  const now = performance.now();
  const samples = [...(prev ? prev.samples : []), [now, job.progress ? job.progress.done : 0]].filter(([t]) => now - t < 10000);
  const [t0, d0] = samples[0];
  const rate = now > t0 ? ((samples.at(-1)[1] - d0) / (now - t0)) * 1000 : prev ? prev.rate : 0;
  jobs.set(job.id, { job, rate, samples });
  if (!terminal(job.state) && !following.has(job.id)) follow(job.id);
}
async function follow(id) {
  following.add(id);
  try {
    const res = await fetch('/v1/jobs/' + id + '/events', { headers: headers() });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const data = buf.slice(0, i).split('\n').find((l) => l.startsWith('data: '));
        buf = buf.slice(i + 2);
        if (data) {
          updateJob(JSON.parse(data.slice(6)));
          renderJobs();
        }
      }
    }
  } catch (err) {
    console.warn('events of job ' + id + ': ' + err.message);
  } finally {
    following.delete(id);
  }
}
async function cancelJob(id) {
  try {
    updateJob(await api('/v1/jobs/' + id, { method: 'DELETE' }));
  } catch (err) {
    $('#message').textContent = err.message;
  }
  renderJobs();
}
// What a verify or a tensor listing said, kept across the 2 s refreshes (which rebuild the tables).
const verified = new Map(); // cache key → { text, cls }
const tensorLists = new Map(); // teacher → { tensors } or { error }
async function verify(key) {
  verified.set(key, { text: 'verifying…', cls: 'verified' });
  renderCachesAgain();
  try {
    const v = await api('/v1/caches/' + key + '/verify', { method: 'POST' });
    verified.set(key, v.ok ? { text: 'ok: ' + v.rows + ' rows, every shard matches its sha256', cls: 'verified ok' } : { text: 'FAILED: ' + v.problems.join('; '), cls: 'verified bad' });
  } catch (err) {
    verified.set(key, { text: err.message, cls: 'verified bad' });
  }
  renderCachesAgain();
}
async function showTensors(name) {
  tensorLists.set(name, { loading: true });
  renderTeachersAgain();
  try {
    tensorLists.set(name, { tensors: (await api('/v1/teachers/' + encodeURIComponent(name) + '/tensors')).tensors });
  } catch (err) {
    tensorLists.set(name, { error: err.message });
  }
  renderTeachersAgain();
}
function tensorCell(name) {
  const t = tensorLists.get(name);
  if (!t) return el('td', {}, el('button', { onclick: () => showTensors(name) }, 'list'));
  if (t.loading) return el('td', {}, 'reading…');
  if (t.error) return el('td', { class: 'error' }, t.error);
  return el('td', {}, el('details', { open: '' }, el('summary', {}, t.tensors.length + ' tensors'), table(['tensor', 'op', 'shape'], t.tensors.map((x) => el('tr', {}, el('td', {}, x.name), el('td', {}, x.op), el('td', {}, '[' + x.shape.join(', ') + ']'))), 'tensors')));
}
let lastTeachers = [];
let lastCaches = [];
const renderTeachersAgain = () => renderTeachers(lastTeachers);
const renderCachesAgain = () => renderCaches(lastCaches);
function renderTeachers(list) {
  lastTeachers = list;
  $('#teachers').replaceChildren(
    table(
      ['teacher', 'sha256', 'classes', 'input', 'execution provider', 'tensors'],
      list.map((t) => {
        if (t.error) return el('tr', { class: 'teacher' }, el('td', {}, t.name), el('td', { class: 'error', colspan: 5 }, t.error.code + ': ' + t.error.message));
        const cell = tensorCell(t.name);
        const input = t.inputs && t.inputs[0] ? t.inputs[0].name + ' [' + t.inputs[0].shape.join(', ') + ']' : '';
        return el('tr', { class: 'teacher' }, el('td', {}, t.name), el('td', { title: t.sha256 }, short(t.sha256)), el('td', {}, t.classes.length), el('td', {}, input), el('td', {}, t.executionProvider), cell);
      }),
      'teachers',
    ),
  );
}
function renderWorkers(r) {
  const row = (w, state) => el('tr', { class: 'worker', 'data-state': state }, el('td', {}, w.id), el('td', { class: state === 'lost' ? 'error' : '' }, state), el('td', {}, w.host), el('td', {}, w.executionProvider || ''), el('td', {}, age(w.lastSeen) + ' ago'), el('td', {}, w.rowsPerSecond.toFixed(0)), el('td', {}, w.tasks), el('td', {}, state === 'live' ? w.active.length : ''));
  $('#workers').replaceChildren(
    el('p', {}, 'queue: ' + r.queue + (r.workers.length === 0 ? ' · no worker heard from in the last 10 s' : '')),
    table(['worker', 'state', 'host', 'execution provider', 'heartbeat', 'rows/s', 'tasks', 'running'], [...r.workers.map((w) => row(w, 'live')), ...(r.lost || []).map((w) => row(w, 'lost'))], 'workers'),
  );
}
function renderCaches(list) {
  lastCaches = list;
  $('#caches').replaceChildren(
    table(
      ['cache', 'teacher', 'dataset', 'mode', 'bytes/row', 'size', 'created', ''],
      list.map((c) => {
        const mode = c.storage.mode + (c.storage.mode === 'topk' ? ' k=' + c.storage.k : '') + ' ' + c.storage.dtype + (c.views ? ', ' + c.views.count + ' views' : '') + (c.labelStatistics ? ', labels' : '');
        const v = verified.get(c.key);
        const cell = v ? el('td', { class: v.cls }, v.text) : el('td', {}, el('button', { class: 'verify', onclick: () => verify(c.key) }, 'verify'));
        return el('tr', { class: 'cache', 'data-key': c.key }, el('td', { title: c.key }, short(c.key)), el('td', {}, c.teacher), el('td', { title: c.datasetFingerprint }, short(c.datasetFingerprint) + ' · ' + c.rows + ' rows'), el('td', {}, mode), el('td', {}, (c.bytes / Math.max(1, c.rows)).toFixed(1)), el('td', {}, bytes(c.bytes)), el('td', {}, c.createdAt), cell);
      }),
      'caches',
    ),
  );
}
async function refresh() {
  const [teachers, js, workers, caches] = await Promise.all([api('/v1/teachers'), api('/v1/jobs'), api('/v1/workers').catch((e) => ({ queue: '?', workers: [], error: e })), api('/v1/caches')]);
  for (const j of js.jobs) updateJob(j);
  renderTeachers(teachers.teachers);
  renderJobs();
  renderWorkers(workers);
  renderCaches(caches.caches);
}
async function start() {
  try {
    await api('/v1/session');
  } catch (err) {
    if (err.status !== 401) throw err;
    $('#login').hidden = false;
    $('#main').hidden = true;
    $('#login-message').textContent = token ? 'That token was refused.' : 'This server needs its token.';
    return;
  }
  $('#login').hidden = true;
  $('#main').hidden = false;
  await refresh();
  document.body.dataset.ready = 'true';
  setInterval(() => refresh().catch((err) => ($('#message').textContent = err.message)), 2000);
}
$('#login-form').onsubmit = (e) => {
  e.preventDefault();
  token = $('#token').value;
  sessionStorage.setItem('distillate-token', token);
  start().catch((err) => ($('#message').textContent = err.message));
};
start().catch((err) => ($('#message').textContent = err.message));
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Distillate server</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h2{margin-top:1.4em}table{border-collapse:collapse;font-size:14px}th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}
td.error{color:#b00020}progress{width:140px}.verified.ok{color:#1b7f3b}.verified.bad{color:#b00020}#message{color:#b00020}
</style></head>
<body>
<h1>Distillate server</h1>
<p id="message"></p>
<section id="login" hidden><form id="login-form"><p id="login-message"></p><label>Token <input id="token" type="password" autocomplete="off"></label> <button>open</button></form></section>
<main id="main" hidden>
<h2>Jobs</h2><div id="jobs"></div>
<h2>Teachers</h2><div id="teachers"></div>
<h2>Workers</h2><div id="workers"></div>
<h2>Caches</h2><div id="caches"></div>
</main>
<script>${SCRIPT}</script>
</body></html>
`;
