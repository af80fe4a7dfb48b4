// Cave web UI, the cluster view (`#nodes`): this cluster and node at the top, a live chart of what this
// node does, and a card for every member. Loaded before app.js, which hands it the API helpers.
//
// Sources, all of this node: `/api/v1/system/info` (cluster id, version, uptime, key count),
// `/api/v1/cluster/nodes` (the members as this node sees them: status, last seen, clock skew; admin only,
// so for another token, and in a build without the route, the view shows this node alone), and
// `/api/v1/perf/metrics` (the Prometheus counters the chart turns into rates). A member's version and key
// count come from its gossip (as of its last heartbeat); a member too old to gossip them links to its console.
'use strict';

window.CaveNodes = function (ctx) {
  const { api, showError, ApiError, visible } = ctx;
  const $ = (id) => document.getElementById(id);
  const NODES_EVERY_MS = 5000;
  const METRICS_EVERY_MS = 2000;
  const SAMPLES = 60; // two minutes at one sample every two seconds
  const SVG = 'http://www.w3.org/2000/svg';

  const st = { nodesTimer: null, metricsTimer: null, samples: [], info: null };

  function show() {
    refresh();
    clearInterval(st.nodesTimer);
    clearInterval(st.metricsTimer);
    st.nodesTimer = setInterval(loadNodes, NODES_EVERY_MS);
    st.metricsTimer = setInterval(sampleMetrics, METRICS_EVERY_MS);
  }

  function hide() {
    clearInterval(st.nodesTimer);
    clearInterval(st.metricsTimer);
  }

  function refresh() {
    loadNodes();
    sampleMetrics();
  }

  // ---------- this node and the members ----------

  async function loadInfo() {
    try {
      st.info = await (await api('GET', '/system/info')).json();
    } catch (e) {
      showError(e, 'Loading this node’s info');
      st.info = null;
    }
    renderSummary();
    return st.info;
  }

  function uptime(seconds) {
    if (typeof seconds !== 'number') return '—';
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    if (d) return d + ' d ' + h + ' h';
    if (h) return h + ' h ' + m + ' min';
    if (m) return m + ' min ' + (seconds % 60) + ' s';
    return seconds + ' s';
  }

  function renderSummary() {
    const i = st.info || {};
    $('sum-cluster').textContent = i.cluster_id || '—';
    $('sum-node').textContent = i.node_id ? i.node_id + ' (' + (i.mode || '?') + ' mode)' : '—';
    $('sum-version').textContent = i.version || '—';
    $('sum-uptime').textContent = uptime(i.uptime_seconds);
    $('sum-keys').textContent = typeof i.keys === 'number' ? i.keys.toLocaleString('en') : '—';
    if (Array.isArray(i.peers)) {
      const alive = i.peers.filter((p) => statusClass(p.status) === 'up').length;
      $('sum-members').textContent = 1 + i.peers.length + ' (' + (1 + alive) + ' alive)';
    } else {
      $('sum-members').textContent = '—';
    }
  }

  async function loadNodes() {
    const infoDone = loadInfo();
    let nodes;
    let note;
    try {
      nodes = await (await api('GET', '/cluster/nodes')).json();
      note = 'Every node this node knows of, as it sees them.';
    } catch (e) {
      if (e.status !== 404 && e.status !== 403) {
        showError(e, 'Loading the node list');
        return;
      }
      // No member list here (a build without the route, or a token without admin): this node from its info.
      const info = await infoDone;
      if (!info) return;
      nodes = [{ id: info.node_id, http_addr: info.http_addr, grpc_addr: info.grpc_addr, status: 'up', local: true }];
      note =
        e.status === 403
          ? 'This node only: the member list needs an admin token.'
          : 'This node (no cluster membership: ' + (info.mode || 'dev') + ' mode).';
    }
    await infoDone;
    if (!visible()) return;
    if (!Array.isArray(nodes)) {
      showError(new ApiError(0, 'unexpected', 'the node list is not a JSON array'), 'Loading the node list');
      return;
    }
    $('nodes-note').textContent = note;
    const box = $('nodes');
    box.replaceChildren(...nodes.map(nodeCard));
    await loadLocks();
  }

  // ---------- locks ----------

  /** The held locks (`GET /api/v1/lock`): name, holding lease, fence, when the hold ends unless renewed. */
  async function loadLocks() {
    let locks;
    try {
      locks = (await (await api('GET', '/lock')).json()).locks;
    } catch (e) {
      $('locks-body').replaceChildren();
      $('locks-note').textContent =
        e.status === 403 ? 'This token may read no lock.' : 'Locks could not be read (' + e.message + ').';
      return;
    }
    if (!visible() || !Array.isArray(locks)) return;
    const now = Date.now();
    $('locks-body').replaceChildren(
      ...locks.map((l) => {
        const row = document.createElement('tr');
        const ends = Math.max(0, Math.round((l.expires_ms - now) / 1000));
        for (const [text, mono] of [
          [l.lock, true],
          [l.holder, true],
          [String(l.fence), true],
          ['in ' + ends + ' s', false],
        ]) {
          const cell = document.createElement('td');
          cell.textContent = text;
          if (mono) cell.className = 'mono';
          row.append(cell);
        }
        return row;
      })
    );
    $('locks-note').textContent = locks.length
      ? 'A holder keeps its lock while it renews its lease; the fence grows with every new holder.'
      : 'No lock is held.';
  }

  function statusClass(status) {
    const s = String(status || '').toLowerCase();
    if (['self', 'up', 'alive', 'ok', 'healthy', 'active'].includes(s)) return 'up';
    if (['suspect', 'suspected', 'degraded', 'joining', 'syncing'].includes(s)) return 'suspect';
    if (['down', 'dead', 'failed', 'faulty', 'unreachable'].includes(s)) return 'down';
    return ''; // e.g. 'left': gone on purpose
  }

  /** `last_seen_ms` is milliseconds since the node was last heard from (a Unix-epoch time is accepted too). */
  function ago(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '—';
    const age = ms > 1e12 ? Date.now() - ms : ms;
    if (age < 1500) return 'just now';
    if (age < 120000) return Math.round(age / 1000) + ' s ago';
    if (age < 7200000) return Math.round(age / 60000) + ' min ago';
    return Math.round(age / 3600000) + ' h ago';
  }

  function nodeCard(n) {
    const card = document.createElement('div');
    card.className = 'card node';
    card.setAttribute('data-node-id', String(n.id));
    const h = document.createElement('h3');
    const self = n.local || String(n.status).toLowerCase() === 'self';
    h.textContent = String(n.id) + (self ? ' (this node)' : '');
    card.appendChild(h);
    const dl = document.createElement('dl');
    dl.className = 'meta';
    const row = (label, value) => {
      const dt = document.createElement('dt');
      dt.textContent = label;
      const dd = document.createElement('dd');
      if (value instanceof Node) dd.appendChild(value);
      else dd.textContent = value === undefined || value === null || value === '' ? '—' : String(value);
      dl.append(dt, dd);
    };
    const badge = document.createElement('span');
    badge.className = 'status ' + statusClass(n.status);
    badge.textContent = String(n.status || 'unknown');
    row('Status', badge);
    row('HTTP', n.http_addr);
    row('gRPC', n.grpc_addr);
    const info = self && st.info && String(st.info.node_id) === String(n.id) ? st.info : null;
    if (info) {
      row('Version', info.version);
      row('Uptime', uptime(info.uptime_seconds));
      row('Keys', typeof info.keys === 'number' ? info.keys.toLocaleString('en') : null);
    }
    if (!n.local) {
      row('Last seen', self ? '—' : ago(n.last_seen_ms));
      row('Clock skew', typeof n.clock_skew_ms === 'number' ? n.clock_skew_ms + ' ms' : 'unknown');
      // Its clock minus the cluster's median; a skewed member (for this node: fenced, refusing writes) is
      // flagged, so an operator sees which clock to fix.
      const offset = document.createElement('span');
      offset.className = 'clock-offset';
      offset.textContent = typeof n.clock_offset_ms === 'number' ? n.clock_offset_ms + ' ms' : 'unknown';
      if (n.clock_skewed) {
        const flag = document.createElement('span');
        flag.className = 'status down clock-skewed';
        flag.textContent = self ? 'fenced: refuses writes' : 'skewed';
        offset.append(' ', flag);
      }
      row('Clock vs cluster', offset);
    }
    if (!self && (typeof n.version === 'string' || typeof n.keys === 'number')) {
      row('Version', n.version);
      row('Keys', typeof n.keys === 'number' ? n.keys.toLocaleString('en') : null);
    }
    if (!self && typeof n.version !== 'string' && typeof n.http_addr === 'string' && n.http_addr) {
      // A member that does not gossip its version and key count: its own console shows them.
      const a = document.createElement('a');
      a.href = location.protocol + '//' + n.http_addr + '/ui/#nodes';
      a.textContent = 'open its console';
      a.rel = 'noopener';
      row('Version, keys', a);
    }
    card.appendChild(dl);
    return card;
  }

  // ---------- the live chart ----------

  /** The sum of every series of each family in a Prometheus text exposition. */
  function parseMetrics(text) {
    const sums = {};
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const v = Number(m[3]);
      if (isFinite(v)) sums[m[1]] = (sums[m[1]] || 0) + v;
    }
    return sums;
  }

  async function sampleMetrics() {
    let sums;
    try {
      sums = parseMetrics(await (await api('GET', '/perf/metrics')).text());
    } catch (e) {
      $('chart-note').textContent = 'No metrics: ' + e.message + (e.status ? ' (HTTP ' + e.status + ')' : '');
      return;
    }
    const writes = (sums.cave_kv_writes_total || 0) + (sums.cave_kv_deletes_total || 0);
    const repaired = sums.cave_anti_entropy_entries_repaired_total || 0;
    st.samples.push({ t: performance.now(), writes, repaired });
    if (st.samples.length > SAMPLES + 1) st.samples.shift();
    $('chart-note').textContent =
      'Writes are this node’s puts and deletes; catch-up counts entries anti-entropy had to repair here, ' +
      'writes that reached this node late (0 when replication keeps up).';
    drawChart();
  }

  function rates() {
    const out = [];
    for (let i = 1; i < st.samples.length; i++) {
      const a = st.samples[i - 1];
      const b = st.samples[i];
      const dt = Math.max((b.t - a.t) / 1000, 0.001);
      // A counter that went down is a restarted node: that interval has no rate.
      out.push({
        writes: Math.max(0, b.writes - a.writes) / dt,
        repaired: Math.max(0, b.repaired - a.repaired) / dt,
      });
    }
    return out;
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawChart() {
    // Drawn at the size it is shown (one user unit a CSS pixel), so that text and lines keep their size.
    const W = Math.max(300, Math.round($('chart').clientWidth || 600));
    const H = 140;
    const PAD = { l: 40, r: 8, t: 10, b: 18 };
    const r = rates();
    const svg = el('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'writes and replication catch-up per second' });
    const max = Math.max(1, ...r.map((x) => Math.max(x.writes, x.repaired)));
    const top = niceCeil(max);
    const x = (i) => PAD.l + ((W - PAD.l - PAD.r) * (SAMPLES - r.length + i)) / (SAMPLES - 1);
    const y = (v) => H - PAD.b - ((H - PAD.t - PAD.b) * v) / top;
    for (const v of [0, top / 2, top]) {
      svg.appendChild(el('line', { class: 'grid', x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
      svg.appendChild(el('text', { class: 'axis', x: PAD.l - 4, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v)));
    }
    svg.appendChild(el('text', { class: 'axis', x: PAD.l, y: H - 4 }, '−2 min'));
    svg.appendChild(el('text', { class: 'axis', x: W - PAD.r, y: H - 4, 'text-anchor': 'end' }, 'now'));
    if (r.length >= 1) {
      for (const [series, cls] of [['writes', 'writes'], ['repaired', 'repair']]) {
        const pts = r.map((p, i) => x(i).toFixed(1) + ',' + y(p[series]).toFixed(1));
        if (pts.length === 1) pts.unshift((x(0) - 4).toFixed(1) + ',' + y(r[0][series]).toFixed(1));
        svg.appendChild(el('polyline', { class: cls, points: pts.join(' ') }));
      }
    } else {
      svg.appendChild(el('text', { class: 'axis', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'collecting…'));
    }
    $('chart').replaceChildren(svg);
    const last = r[r.length - 1];
    $('rate-writes').textContent = last ? fmt(last.writes) : '—';
    $('rate-repair').textContent = last ? fmt(last.repaired) : '—';
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    return v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '');
  }

  return { show, hide, refresh };
};
