// The live view: renders each `view` event from /events. Plain DOM, no framework, no
// build step; text is always set with textContent, never parsed as HTML.
'use strict';

(function () {
  const token = new URLSearchParams(location.search).get('token');
  const query = token ? '?token=' + encodeURIComponent(token) : '';
  let view = null;
  let skew = 0; // browser clock minus server clock (ms)

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + 'h' : '') + (h || m ? String(m).padStart(h ? 2 : 1, '0') + 'm' : '') + String(r).padStart(h || m ? 2 : 1, '0') + 's';
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function now() { return Date.now() - skew; }

  function renderRun() {
    const run = view.run;
    $('pool').textContent = run ? run.pool : (view.pool || '');
    const r = $('run');
    r.replaceChildren();
    if (!run) {
      r.textContent = 'no run yet: waiting for one to start';
      r.className = 'run';
      return;
    }
    r.className = 'run run-' + run.state;
    r.append(el('strong', 'run ' + run.id + ': ' + run.state));
    const end = run.ended_ms || now();
    r.append(el('span', ' · started ' + clock(run.started_ms) + ', ' + duration(end - run.started_ms) + (run.ended_ms ? '' : ' so far'), 'muted'));
    if (run.holder) r.append(el('span', ' · ebb ' + run.holder, 'muted'));
    if (run.message) r.append(el('div', run.message));
  }

  function renderMembers() {
    const body = $('members').tBodies[0];
    body.replaceChildren();
    for (const m of view.members) {
      const tr = document.createElement('tr');
      tr.dataset.member = m.name;
      tr.dataset.state = m.state;
      tr.append(el('td', m.name));
      const st = el('td');
      st.append(el('span', m.state, 'state state-' + m.state));
      if (m.reason) st.append(el('div', m.reason, 'muted'));
      tr.append(st);
      tr.append(el('td', m.step ? m.step + (m.step_kind && m.step_kind !== m.step ? ' (' + m.step_kind + ')' : '') : ''));
      const elapsed = el('td', m.step_started_ms ? duration(now() - m.step_started_ms) : '');
      if (m.step_started_ms) elapsed.dataset.since = m.step_started_ms;
      tr.append(elapsed);
      tr.append(el('td', m.connections === null || m.connections === undefined ? '' : String(m.connections), 'connections'));
      tr.append(el('td', m.total_ops ? m.done_ops + '/' + m.total_ops : ''));
      tr.append(el('td', m.owed.length ? m.owed.join(', ') : '–'));
      body.append(tr);
    }
  }

  function renderChart() {
    const svg = $('chart');
    const ns = 'http://www.w3.org/2000/svg';
    svg.replaceChildren();
    const pts = view.in_service;
    const legend = $('chart-legend');
    if (!pts.length || !view.run) { legend.textContent = 'no samples yet'; return; }
    const t0 = view.run.started_ms;
    const t1 = Math.max(view.run.ended_ms || now(), pts[pts.length - 1].t_ms, t0 + 1000);
    const total = Math.max(1, ...pts.map(p => p.total));
    const x = t => ((t - t0) / (t1 - t0)) * 800;
    const y = n => 110 - (n / total) * 100;
    let d = 'M ' + x(Math.max(t0, pts[0].t_ms)) + ' ' + y(pts[0].in_service);
    for (let i = 1; i < pts.length; i++) {
      d += ' H ' + x(pts[i].t_ms) + ' V ' + y(pts[i].in_service);
    }
    d += ' H ' + x(t1);
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', '#175cd3');
    path.setAttribute('stroke-width', '2');
    path.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(path);
    const last = pts[pts.length - 1];
    const min = Math.min(...pts.map(p => p.in_service));
    legend.textContent = 'now ' + last.in_service + ' of ' + last.total + ' in service; lowest ' + min;
  }

  function renderFailures() {
    const box = $('failures');
    box.replaceChildren();
    $('failures-section').hidden = view.failures.length === 0;
    for (const f of view.failures) {
      const head = el('div');
      head.append(el('strong', f.member + ': ' + f.step + ' (' + f.kind + ')'));
      head.append(el('span', ' failed at ' + clock(f.t_ms) + (f.exit_code === null ? '' : ', exit ' + f.exit_code), 'muted'));
      box.append(head);
      if (f.detail) box.append(el('div', f.detail));
      if (f.output) box.append(el('pre', f.output));
    }
  }

  function renderLog() {
    const log = $('log');
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 20;
    log.replaceChildren();
    for (const e of view.log) {
      log.append(el('li', clock(e.t_ms) + '  ' + e.member.padEnd(12) + ' ' + e.text, e.outcome));
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function render() {
    renderRun();
    renderMembers();
    renderChart();
    renderFailures();
    renderLog();
  }

  // Elapsed times move between events.
  function tick() {
    if (!view) return;
    for (const td of document.querySelectorAll('td[data-since]')) {
      td.textContent = duration(now() - Number(td.dataset.since));
    }
    if (view.run && !view.run.ended_ms) renderRun();
  }

  function live(on, text) {
    const c = $('conn');
    c.dataset.live = on ? 'true' : 'false';
    c.textContent = text;
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('metrics').href = 'metrics' + query;
    const source = new EventSource('events' + query);
    source.addEventListener('view', function (e) {
      const msg = JSON.parse(e.data);
      if (msg.view.error) { live(false, msg.view.error); return; }
      view = msg.view;
      skew = Date.now() - msg.now_ms;
      render();
      live(true, 'live');
    });
    source.addEventListener('open', function () { live(true, 'live'); });
    source.addEventListener('error', function () {
      live(false, 'disconnected: ebb stopped or the network is down (retrying)');
    });
    setInterval(tick, 1000);
  });
})();
