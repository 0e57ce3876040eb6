// troupe's web UI: plain modules, no build step, nothing loaded from elsewhere. Every page reads
// the UI's JSON API (/ui/api/…) and redraws when the live feed (Server-Sent Events fed from
// NATS) says something of it happened: no polling.

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const liveBadge = document.getElementById('live');
let page = null; // the current page: {onNotice(n)}
let info = { actions: false };

// ---- helpers ----

function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(tag.startsWith('svg:') ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml',
    tag.replace(/^svg:/, ''));
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, opts = {}) {
  const res = await fetch('/ui/api/' + path, opts);
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

async function act(path, body) {
  return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Troupe-UI': '1' }, body: JSON.stringify(body) });
}

function say(text, error = false) {
  banner.textContent = text;
  banner.className = error ? 'banner error' : 'banner';
  banner.hidden = !text;
}

// seg is a path segment of the API, encoded.
function seg(s) { return encodeURIComponent(s); }

function state(s) { return h('span', { class: 'state ' + s }, s); }

// gates says what the gates a revision passes said of it: "waiting for approval by …" while one
// has not answered and the revision is not over.
function gates(r) {
  const gs = r.gates || [];
  if (!gs.length) return '';
  const pending = gs.filter((g) => g.verdict === 'pending').map((g) => g.gate);
  const open = ['requested', 'rendered'].includes(r.state);
  return h('div', { class: 'gates' },
    open && pending.length ? h('div', { class: 'waiting' }, 'waiting for approval by ' + pending.join(', ')) : '',
    gs.filter((g) => g.verdict !== 'pending').map((g) =>
      h('div', { class: 'muted' }, `${g.gate}: ${g.verdict}${g.by ? ' by ' + g.by : ''}${g.message ? ' — ' + g.message : ''}`)));
}

function ago(t) {
  if (!t) return '';
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function when(t) { return t ? new Date(t).toLocaleString() : ''; }

function by(source) { return (source || '').replace(/^troupe\//, ''); }

// debounce runs fn at most once per 100ms, with the last arguments.
function debounce(fn) {
  let timer = null, last = [];
  return (...args) => { last = args; clearTimeout(timer); timer = setTimeout(() => fn(...last), 100); };
}

// A button that asks once more before it acts.
function confirmButton(label, question, run, cls = '') {
  const b = h('button', { class: cls, disabled: !info.actions, title: info.actions ? '' : 'read-only: ' + info.readOnly });
  b.textContent = label;
  let armed = false;
  b.addEventListener('click', async () => {
    if (!armed) { armed = true; b.textContent = question; return; }
    b.disabled = true;
    try { await run(); } catch (e) { say(e.message, true); }
    finally { armed = false; b.textContent = label; b.disabled = !info.actions; }
  });
  return b;
}

// ---- live feed ----

// live opens the feed, and shows the page once it is open (and afresh after it was lost: the
// notices sent meanwhile are gone), so that nothing happens between what a page reads and the
// notices it hears. Should the feed not open, the page shows anyway, not live.
function live() {
  const src = new EventSource('/ui/api/live');
  let lost = false;
  let shown = false;
  setTimeout(() => { if (!shown) { shown = true; route(); } }, 3000);
  src.addEventListener('open', () => {
    liveBadge.textContent = 'live'; liveBadge.className = 'live on';
    if (!shown || lost) { shown = true; lost = false; route(); }
  });
  src.addEventListener('error', () => { lost = true; liveBadge.textContent = 'reconnecting…'; liveBadge.className = 'live off'; });
  src.addEventListener('notice', (m) => {
    const n = JSON.parse(m.data);
    if (page && page.onNotice) page.onNotice(n);
  });
}

// ---- pages ----

function releasesPage() {
  let list = [];
  const fresh = new Set();
  const ns = h('input', { placeholder: 'namespace', 'aria-label': 'namespace', id: 'filter-namespace' });
  const text = h('input', { placeholder: 'name contains', 'aria-label': 'name', id: 'filter-name' });
  const st = h('select', { 'aria-label': 'state', id: 'filter-state' }, h('option', { value: '' }, 'any state'),
    ...['requested', 'rendered', 'progressing', 'ready', 'degraded', 'failed', 'superseded', 'diffed', 'uninstalled'].map((s) => h('option', { value: s }, s)));
  const body = h('tbody');
  const draw = () => {
    body.replaceChildren();
    for (const r of list) {
      const [rns, rname] = r.release.split('/');
      const s = r.uninstalled ? 'uninstalled' : r.state;
      if (ns.value && rns !== ns.value) continue;
      if (text.value && !rname.includes(text.value)) continue;
      if (st.value && s !== st.value) continue;
      body.append(h('tr', { 'data-release': r.release, class: fresh.has(r.release) ? 'fresh' : '' },
        h('td', {}, rns), h('td', {}, h('a', { href: `#/r/${rns}/${rname}` }, rname)),
        h('td', {}, r.current || '—'), h('td', {}, r.latest), h('td', {}, state(s)),
        h('td', { title: when(r.updated) }, ago(r.updated))));
    }
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, list.length ? 'No release matches.' : 'No release yet: publish one with troupe release.')));
    fresh.clear();
  };
  const load = async () => { list = await api('releases'); draw(); };
  // A notice says which release moved: ask for that one (once history folded the event) and
  // put it in its place.
  const patch = async (rel, seq) => {
    const [rns, rname] = rel.split('/');
    const v = await api(`releases/${seg(rns)}/${seg(rname)}?atLeast=${seq}`);
    const last = v.revisions.length ? v.revisions[v.revisions.length - 1] : null;
    const row = { release: v.release, current: v.current, latest: last ? last.revision : 0, state: last ? last.state : '',
      uninstalled: v.uninstalled, updated: v.updated };
    const i = list.findIndex((r) => r.release === row.release);
    if (i >= 0) list[i] = row;
    else { list.push(row); list.sort((a, b) => (a.release < b.release ? -1 : 1)); }
    fresh.add(row.release);
    draw();
  };
  for (const el of [ns, text, st]) el.addEventListener('input', draw);
  main.replaceChildren(h('h1', {}, 'Releases'), h('div', { class: 'filters' }, ns, text, st),
    h('table', { id: 'releases' }, h('thead', {}, h('tr', {}, ['Namespace', 'Name', 'Current', 'Latest', 'State', 'Updated'].map((c) => h('th', {}, c)))), body));
  load().catch((e) => say(e.message, true));
  const due = new Map(); // release → the newest sequence heard of
  const flush = debounce(() => {
    for (const [rel, seq] of due) patch(rel, seq).catch((e) => say(e.message, true));
    due.clear();
  });
  return { onNotice: (n) => { if (n.kind === 'event') { due.set(n.release, Math.max(n.sequence, due.get(n.release) || 0)); flush(); } } };
}

function releasePage(ns, name) {
  const rel = `${ns}/${name}`;
  let view = null;
  const head = h('div');
  const revs = h('tbody');
  const diffOut = h('div', { id: 'diff' });
  const valuesOut = h('pre', { id: 'values' });
  const from = h('select', { 'aria-label': 'from revision', id: 'diff-from' });
  const to = h('select', { 'aria-label': 'to revision', id: 'diff-to' });
  const valuesRev = h('select', { 'aria-label': 'values of revision', id: 'values-revision' });
  const allValues = h('input', { type: 'checkbox', id: 'values-all' });

  const rollback = (n) => async () => {
    const r = await act(`releases/${seg(ns)}/${seg(name)}/rollback`, { revision: n, reason: 'from the web UI' });
    say(`Published ${r.type} to revision ${n} (${r.id}).`);
  };
  const draw = () => {
    const latest = view.revisions.length ? view.revisions[view.revisions.length - 1].revision : 0;
    head.replaceChildren(h('h1', {}, rel),
      h('p', {}, 'Current revision ', h('strong', { id: 'current' }, view.current || '—'), ', latest ', h('strong', {}, latest),
        view.uninstalled ? h('span', {}, ' — ', state('uninstalled')) : '',
        view.rollback ? h('span', {}, ` — rolling back to ${view.rollback.target}`) : ''),
      h('div', { class: 'actions' },
        confirmButton('Uninstall', `Uninstall ${rel}? Click again`, async () => {
          const r = await act(`releases/${seg(ns)}/${seg(name)}/uninstall`, {});
          say(`Published ${r.type} (${r.id}).`);
        }, 'danger')));
    revs.replaceChildren();
    for (const r of [...view.revisions].reverse()) {
      const req = r.request || {};
      const why = [r.stage, r.reason].filter(Boolean).join(': ');
      revs.append(h('tr', { 'data-revision': r.revision },
        h('td', {}, h('a', { href: `#/r/${ns}/${name}/${r.revision}` }, r.revision)),
        h('td', {}, state(r.state), r.rolledBackTo ? h('div', { class: 'muted' }, `rolled back to ${r.rolledBackTo}`) : ''),
        h('td', {}, why ? h('div', {}, why) : '', r.message ? h('div', { class: 'muted' }, r.message) : '', gates(r)),
        h('td', {}, by(req.by), req.requestedBy ? h('div', { class: 'muted' }, req.requestedBy) : '',
          req.source ? h('div', { class: 'muted' }, req.source) : ''),
        h('td', { title: when(r.times.requested) }, when(r.times.requested)),
        h('td', {}, r.times.finished ? when(r.times.finished) : ''),
        h('td', {}, r.revision !== view.current && r.bundle
          ? confirmButton(`Roll back to ${r.revision}`, `Roll back to ${r.revision}? Click again`, rollback(r.revision)) : '')));
    }
    for (const sel of [from, to, valuesRev]) {
      const keep = sel.value;
      sel.replaceChildren(...view.revisions.map((r) => h('option', { value: r.revision }, r.revision)));
      if (keep) sel.value = keep;
    }
    if (!from.dataset.set && view.revisions.length > 1) {
      from.value = view.revisions[view.revisions.length - 2].revision;
      to.value = latest;
      from.dataset.set = '1';
    }
    if (!valuesRev.dataset.set) { valuesRev.value = latest; valuesRev.dataset.set = '1'; }
  };
  const diff = async () => {
    const d = await api(`releases/${seg(ns)}/${seg(name)}/diff?from=${seg(from.value)}&to=${seg(to.value)}`);
    const rows = [];
    for (const o of d.objects) {
      const obj = `${o.kind} ${o.namespace ? o.namespace + '/' : ''}${o.name}`;
      if (!o.fields || !o.fields.length) rows.push(h('tr', {}, h('td', {}, obj), h('td', {}, o.change), h('td', { class: 'from' }), h('td', { class: 'to' })));
      for (const f of o.fields || []) {
        const show = (v) => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v, null, 1));
        rows.push(h('tr', {}, h('td', {}, obj), h('td', {}, f.path), h('td', { class: 'from' }, show(f.from)), h('td', { class: 'to' }, show(f.to))));
      }
    }
    diffOut.replaceChildren(rows.length
      ? h('table', { class: 'diff' }, h('thead', {}, h('tr', {}, h('th', {}, 'Object'), h('th', {}, 'Field'), h('th', {}, `Revision ${d.from}`), h('th', {}, `Revision ${d.to}`))), h('tbody', {}, rows))
      : h('p', { class: 'muted' }, `Revisions ${d.from} and ${d.to} apply the same objects.`));
  };
  const values = async () => {
    try {
      const v = await api(`releases/${seg(ns)}/${seg(name)}/values?revision=${seg(valuesRev.value)}&all=${allValues.checked}`);
      valuesOut.textContent = JSON.stringify(v.values, null, 2);
    } catch (e) { valuesOut.textContent = e.message; }
  };
  const load = async (seq) => {
    view = await api(`releases/${seg(ns)}/${seg(name)}` + (seq ? `?atLeast=${seq}` : ''));
    draw();
  };
  main.replaceChildren(h('p', {}, h('a', { href: '#/' }, '← Releases')), head,
    h('h2', {}, 'Revisions'),
    h('table', { id: 'revisions' }, h('thead', {}, h('tr', {}, ['Revision', 'State', 'Why', 'By', 'Requested', 'Finished', ''].map((c) => h('th', {}, c)))), revs),
    h('h2', {}, 'Diff'), h('div', { class: 'actions' }, 'from', from, 'to', to, h('button', { id: 'diff-show', onclick: () => diff().catch((e) => say(e.message, true)) }, 'Show diff')),
    h('p', { class: 'muted' }, 'Secret data is redacted.'), diffOut,
    h('h2', {}, 'Values'), h('div', { class: 'actions' }, 'revision', valuesRev, h('label', {}, allValues, ' computed (with the chart\'s defaults)'),
      h('button', { id: 'values-show', onclick: values }, 'Show values')), valuesOut);
  load().then(values).catch((e) => say(e.message, true));
  const reload = debounce((seq) => load(seq).catch((e) => say(e.message, true)));
  return { onNotice: (n) => { if (n.kind === 'event' && n.release === rel) reload(n.sequence); } };
}

// The lanes of a timeline, in the order a flow goes through them.
const laneOrder = ['cli', 'ui', 'renderer', 'applier', 'health', 'history'];

function timelinePage(ns, name, revision) {
  const rel = `${ns}/${name}`;
  const out = h('div', { id: 'timeline' });
  let flows = new Set(); // the flows the trace shows: its requests' ids
  const load = async () => {
    const tr = await api(`releases/${seg(ns)}/${seg(name)}/trace?revision=${revision}`);
    flows = new Set(tr.events.filter((e) => /requested$/.test(e.type)).map((e) => e.id));
    out.replaceChildren(drawTimeline(tr), ...objectsTable(tr.objects || []));
  };
  main.replaceChildren(h('p', {}, h('a', { href: `#/r/${ns}/${name}` }, `← ${rel}`)), h('h1', {}, `${rel} revision ${revision}`), out);
  load().catch((e) => { out.replaceChildren(h('p', { class: 'stopped' }, e.message)); });
  const reload = debounce(() => load().catch((e) => say(e.message, true)));
  // Its own flows' events, and a new request of the release (a rollback may restore this revision).
  return { onNotice: (n) => { if (n.kind === 'event' && n.release === rel && (flows.has(n.flow) || /requested$/.test(n.type))) reload(); } };
}

function drawTimeline(tr) {
  const evs = tr.events;
  const lanes = laneOrder.filter((l) => l === 'cli' || ['renderer', 'applier', 'health', 'history'].includes(l) || evs.some((e) => e.service === l));
  for (const e of evs) if (!lanes.includes(e.service)) lanes.push(e.service);
  const t0 = new Date(evs[0].time).getTime();
  const span = Math.max(1, new Date(evs[evs.length - 1].time).getTime() - t0);
  const left = 110, width = 860, laneH = 44, top = 46;
  const x = (e) => left + ((new Date(e.time).getTime() - t0) / span) * (width - 20) + 10;
  const height = top + lanes.length * laneH + 40;
  const svg = h('svg:svg', { class: 'timeline', viewBox: `0 0 ${left + width + 20} ${height}`, width: left + width + 20, height, 'font-size': 11 });
  lanes.forEach((l, i) => {
    const y = top + i * laneH;
    svg.append(h('svg:g', { 'data-lane': l }, h('svg:rect', { class: 'lane', x: left, y: y + 4, width, height: laneH - 8, rx: 4 }),
      h('svg:text', { class: 'lane-name', x: 8, y: y + laneH / 2 + 4 }, l)));
  });
  // Stages: a bar from the event that ended the stage before to the one that ended this one.
  let prev = evs[0], k = 0;
  for (const s of tr.stages) {
    const end = evs.slice(evs.indexOf(prev) + 1).find((e) => e.type === 'release.' + s.to);
    if (!end) break;
    const y = 14 + (k++ % 2) * 14;
    svg.append(h('svg:g', { 'data-stage': s.stage }, h('svg:line', { class: 'stage', x1: x(prev), x2: x(end), y1: y, y2: y }),
      h('svg:text', { class: 'stage-label', x: (x(prev) + x(end)) / 2, y: y - 3, 'text-anchor': 'middle' }, `${s.stage} ${s.duration}`)));
    prev = end;
  }
  evs.forEach((e, i) => {
    const y = top + lanes.indexOf(e.service) * laneH + laneH / 2;
    const short = e.type.replace(/^release\./, '');
    let cls = 'mark';
    if (['ready', 'failed', 'superseded', 'diffed', 'uninstalled'].includes(short)) cls += ' end-' + short;
    if (short === 'hooked') cls += ' hook';
    svg.append(h('svg:g', { 'data-event': e.type, 'data-service': e.service },
      h('svg:title', {}, `${e.type} +${e.offset} by ${e.service}${e.detail ? ': ' + e.detail : ''}`),
      h('svg:circle', { class: cls, cx: x(e), cy: y, r: 7 }),
      h('svg:text', { x: x(e), y: y + (i % 2 ? -11 : 20), 'text-anchor': 'middle' }, short)));
  });
  const end = tr.ended ? h('p', { id: 'ended' }, 'Ended: ', state(tr.ended)) : h('p', { id: 'ended', class: 'muted' }, 'Still going…');
  const stopped = tr.stopped ? h('p', { class: 'stopped', id: 'stopped' }, 'Stopped: ' + tr.stopped) : '';
  const rows = evs.map((e) => h('tr', {}, h('td', {}, '+' + e.offset), h('td', {}, e.service), h('td', {}, e.type), h('td', {}, e.detail || '')));
  return h('div', {}, end, stopped, svg,
    h('details', {}, h('summary', {}, `${evs.length} events`), h('table', {}, h('tbody', {}, rows))));
}

function objectsTable(objs) {
  if (!objs.length) return [];
  return [h('h2', {}, 'Objects'), h('table', { id: 'objects' }, h('thead', {}, h('tr', {}, ['Kind', 'Namespace', 'Name', 'Status', 'Message'].map((c) => h('th', {}, c)))),
    h('tbody', {}, objs.map((o) => h('tr', {}, h('td', {}, o.kind), h('td', {}, o.namespace || ''), h('td', {}, o.name), h('td', {}, state(o.status)), h('td', { class: 'muted' }, o.message || '')))))];
}

function graphPage() {
  const out = h('div', { id: 'graph' }, h('p', { class: 'muted' }, 'Asking the running services ($SRV.INFO)…'));
  main.replaceChildren(h('h1', {}, 'Choreography'),
    h('p', { class: 'muted' }, 'Discovered from the running services: who consumes and produces which event types.'), out);
  api('graph').then((res) => {
    const g = res.graph;
    g.edges = g.edges || [];
    g.services = g.services || [];
    const pic = h('div', { class: 'picture' });
    pic.append(new DOMParser().parseFromString(res.svg, 'image/svg+xml').documentElement);
    const types = [...new Set(g.edges.map((e) => e.type))].sort();
    out.replaceChildren(pic,
      g.warnings && g.warnings.length ? h('ul', { class: 'warnings', id: 'warnings' }, g.warnings.map((w) => h('li', {}, w))) : h('p', { class: 'muted' }, 'Every type has a producer and a consumer.'),
      h('h2', {}, 'Services'),
      h('table', { id: 'services' }, h('thead', {}, h('tr', {}, ['Service', 'Instances', 'Version', 'Consumes', 'Produces'].map((c) => h('th', {}, c)))),
        h('tbody', {}, g.services.map((s) => h('tr', {}, h('td', {}, s.name), h('td', {}, s.instances), h('td', {}, s.version), h('td', {}, (s.consumes || []).join(', ')), h('td', {}, (s.produces || []).join(', ')))))),
      h('h2', {}, 'Events'),
      h('table', {}, h('tbody', {}, types.map((t) => h('tr', {}, h('td', {}, t),
        h('td', {}, [...new Set(g.edges.filter((e) => e.type === t).map((e) => e.from))].join(', ') + ' → ' + [...new Set(g.edges.filter((e) => e.type === t).map((e) => e.to))].join(', ')))))));
  }).catch((e) => out.replaceChildren(h('p', { class: 'stopped' }, e.message)));
  return {};
}

function deadLettersPage() {
  const body = h('tbody');
  const load = async () => {
    const list = await api('deadletters');
    body.replaceChildren();
    for (const d of list) {
      const original = d.event ? JSON.stringify(d.event, null, 2) : d.raw;
      const redrive = d.redrive
        ? confirmButton('Re-drive', 'Request again? Click again', async () => {
          const r = await act(`deadletters/${d.sequence}/redrive`, {});
          say(r.duplicate ? `Already re-driven: ${r.type} for ${r.release} (${r.id}).` : `Published ${r.type} for ${r.release} again (${r.id}).`);
        })
        : h('button', { disabled: true, title: d.noRedrive }, 'Re-drive');
      body.append(h('tr', { 'data-sequence': d.sequence },
        h('td', {}, d.sequence), h('td', { title: when(d.time) }, ago(d.time)), h('td', {}, d.service),
        h('td', {}, d.reason), h('td', {}, d.type || ''), h('td', {}, d.release ? h('a', { href: `#/r/${d.release}` }, d.release) : ''),
        h('td', {}, h('details', {}, h('summary', {}, 'event'), h('pre', {}, original))),
        h('td', {}, redrive, d.noRedrive ? h('div', { class: 'muted' }, d.noRedrive) : '')));
    }
    if (!list.length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No dead letters.')));
  };
  main.replaceChildren(h('h1', {}, 'Dead letters'),
    h('p', { class: 'muted' }, 'Events a service gave up on, newest first. A request can be re-driven: asked again as a new request.'),
    h('table', { id: 'dead-letters' }, h('thead', {}, h('tr', {}, ['#', 'Age', 'Service', 'Reason', 'Type', 'Release', 'Original', ''].map((c) => h('th', {}, c)))), body));
  load().catch((e) => say(e.message, true));
  const reload = debounce(() => load().catch((e) => say(e.message, true)));
  return { onNotice: (n) => { if (n.kind === 'deadletter') reload(); } };
}

// ---- routing ----

function route() {
  say(info.actions ? '' : 'Read-only: ' + info.readOnly);
  let parts = [];
  try { parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent); } catch { /* a broken link: the releases */ }
  // A release's namespace and name are DNS labels (what the server checks too): anything else
  // in a link is no release.
  if (parts[0] === 'r' && !parts.slice(1, 3).every((p) => /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p))) parts = [];
  let nav = 'releases';
  if (parts[0] === 'r' && parts.length === 3) page = releasePage(parts[1], parts[2]);
  else if (parts[0] === 'r' && parts.length === 4) page = timelinePage(parts[1], parts[2], Number(parts[3]));
  else if (parts[0] === 'graph') { page = graphPage(); nav = 'graph'; }
  else if (parts[0] === 'dead-letters') { page = deadLettersPage(); nav = 'dead-letters'; }
  else page = releasesPage();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === nav);
}

api('info').then((i) => {
  info = i;
  if (!i.actions) say('Read-only: ' + i.readOnly);
}).catch(() => {}).finally(() => {
  window.addEventListener('hashchange', route);
  live();
});
