// Cave web UI: plain JavaScript, no dependencies, no build step.
//
// Rules kept throughout:
// - values, keys and server messages reach the page only through textContent / attributes, never innerHTML;
// - every API path is built with `encodePath`, which percent-encodes each key segment on its own;
// - every API error is shown in the error banner (or, for a missing key, in the value pane), never dropped.
//
// Access control: the token lives in sessionStorage only (gone with the tab), travels only in the
// Authorization header (never in a URL: the watch stream is read with fetch, not EventSource, for that), and
// `whoami` tells which actions to grey out. A 401 anywhere shows the login screen.
//
// Location: `#/` + encoded path. A path ending in "/" (or empty) is a folder; anything else is a key, shown
// together with the listing of its folder. `#nodes` is the node list.
'use strict';

(function () {
  const API = '/api/v1';
  const MASK = '••••••';
  const HEX_LIMIT = 64 * 1024;
  const TOKEN_KEY = 'cave.token';

  const $ = (id) => document.getElementById(id);

  const state = {
    view: 'keys',
    folder: '', // "" or "a/b/"
    key: null, // full key or null
    entry: null, // {key, version, contentType, secret, revealed, bytes}
    raw: false, // show JSON as stored instead of pretty-printed
    editor: null, // null, {mode: 'create'} or {mode: 'edit', key, version}
    es: null,
    esFolder: null,
    esRetry: null,
    refreshValue: false,
    listingSeq: 0,
    listingSignature: null,
    valueSeq: 0,
    refreshTimer: null,
    nodesTimer: null,
    whoami: null, // the answer of /acl/whoami: {acl, accessor, admin, rules}
  };

  // ---------- access ----------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** The rule that decides `key` (longest prefix), as whoami lists them. */
  function ruleFor(key) {
    const rules = (state.whoami && state.whoami.rules) || [];
    let best = null;
    for (const r of rules) {
      if (key.startsWith(r.prefix) && (!best || r.prefix.length > best.prefix.length)) best = r;
    }
    return best;
  }

  /** Whether the token may `cap` on `key` (the server decides; this only greys out buttons). */
  function may(cap, key) {
    const r = ruleFor(key);
    return !!r && r.allow.includes(cap);
  }

  /** Whether the token may `cap` on some key below `prefix`. */
  function maySomeBelow(cap, prefix) {
    const rules = (state.whoami && state.whoami.rules) || [];
    return may(cap, prefix) || rules.some((r) => r.prefix.startsWith(prefix) && r.allow.includes(cap));
  }

  function applyPermissions() {
    const grey = (id, allowed, why) => {
      $(id).disabled = !allowed;
      $(id).title = allowed ? '' : why;
    };
    grey('btn-new', maySomeBelow('write', state.folder), 'your token may not write here');
    if (state.key) {
      grey('btn-edit', may('write', state.key), 'your token may not write this key');
      grey('btn-delete', may('delete', state.key), 'your token may not delete this key');
      grey('btn-reveal', may('secret', state.key), 'your token may not open secrets here');
    }
  }

  function showLogin(message) {
    closeWatch();
    $('view-login').hidden = false;
    $('view-keys').hidden = true;
    $('view-nodes').hidden = true;
    $('btn-signout').hidden = true;
    $('login-note').textContent = message || '';
    $('login-token').focus();
  }

  /** Ask the node who the token is; show the login screen on a 401, else the app. */
  async function start() {
    try {
      state.whoami = await (await api('GET', '/acl/whoami')).json();
    } catch (err) {
      if (err.status !== 401) showError(err, 'Signing in');
      return;
    }
    $('view-login').hidden = true;
    $('open-banner').hidden = state.whoami.acl !== false;
    $('btn-signout').hidden = state.whoami.acl === false;
    $('whoami').textContent = state.whoami.acl === false ? '' : state.whoami.accessor;
    route();
  }

  function signIn(ev) {
    ev.preventDefault();
    const t = $('login-token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('login-token').value = '';
    clearError();
    start();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.whoami = null;
    $('whoami').textContent = '';
    showLogin('Signed out.');
  }

  // ---------- paths ----------

  /** Percent-encode each segment of a key or folder path ("a b/c?" -> "a%20b/c%3F"); "/" stays a separator. */
  function encodePath(path) {
    return path.split('/').map(encodeURIComponent).join('/');
  }

  function decodePath(encoded) {
    return encoded.split('/').map(decodeURIComponent).join('/');
  }

  /** The folder holding `key` ("" for a top-level key). */
  function parentOf(key) {
    const i = key.lastIndexOf('/');
    return i < 0 ? '' : key.slice(0, i + 1);
  }

  /** The last segment of a path, with the trailing "/" of a folder kept. */
  function nameOf(path, folder) {
    return path.startsWith(folder) ? path.slice(folder.length) : path;
  }

  /**
   * Problems the browser would hide from the server: it resolves "." and ".." segments (also as %2e) in a URL
   * before sending it, so "a/../b" would silently become "b". Everything else is left to the API to judge.
   */
  function localKeyProblem(key) {
    if (key.split('/').some((s) => s === '.' || s === '..')) {
      return 'key has a "." or ".." segment';
    }
    return null;
  }

  function hashFor(path) {
    return '#/' + encodePath(path);
  }

  function parseLocation() {
    const h = location.hash;
    if (h === '#nodes') return { view: 'nodes' };
    let path = '';
    if (h.startsWith('#/')) {
      try {
        path = decodePath(h.slice(2));
      } catch (e) {
        showError(new ApiError(0, 'invalid_input', 'the address has an invalid percent-encoding'), 'Opening');
      }
    }
    if (path === '' || path.endsWith('/')) return { view: 'keys', folder: path, key: null };
    return { view: 'keys', folder: parentOf(path), key: path };
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** fetch + the API's error shape: resolves with the Response on 2xx, rejects with an ApiError otherwise. */
  async function api(method, path, opts) {
    const o = opts || {};
    let url = API + path;
    if (o.query) {
      const q = new URLSearchParams(o.query).toString();
      if (q) url += '?' + q;
    }
    const headers = Object.assign({}, o.headers || {});
    if (token()) headers['Authorization'] = 'Bearer ' + token();
    let resp;
    try {
      resp = await fetch(url, { method, body: o.body, headers, signal: o.signal, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'network', 'cannot reach the server (' + e.message + ')');
    }
    if (!resp.ok) {
      let code = 'http_' + resp.status;
      let message = resp.statusText || 'request failed';
      try {
        const body = await resp.json();
        if (body && typeof body.error === 'string') {
          message = body.error;
          if (typeof body.code === 'string') code = body.code;
        }
      } catch (e) {
        // not the API's JSON error shape: keep the HTTP status text
      }
      if (resp.status === 401) {
        const had = token();
        sessionStorage.removeItem(TOKEN_KEY); // a refused token is of no further use
        showLogin(had ? 'The token was refused: ' + message : '');
      }
      throw new ApiError(resp.status, code, message);
    }
    return resp;
  }

  // ---------- banners ----------

  function showError(err, what) {
    const status = err.status ? ' (HTTP ' + err.status + ', ' + err.code + ')' : err.code ? ' (' + err.code + ')' : '';
    $('error-text').textContent = (what ? what + ': ' : '') + err.message + status;
    $('error').hidden = false;
    $('notice').hidden = true;
  }

  function clearError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
  }

  let noticeTimer = null;
  function notify(text) {
    $('notice-text').textContent = text;
    $('notice').hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      $('notice').hidden = true;
    }, 4000);
  }

  // ---------- navigation ----------

  function go(path) {
    const h = hashFor(path);
    if (location.hash === h) route();
    else location.hash = h;
  }

  function route() {
    const r = parseLocation();
    state.view = r.view;
    $('view-keys').hidden = r.view !== 'keys';
    $('view-nodes').hidden = r.view !== 'nodes';
    $('tab-keys').classList.toggle('active', r.view === 'keys');
    $('tab-nodes').classList.toggle('active', r.view === 'nodes');
    clearInterval(state.nodesTimer);
    if (r.view === 'nodes') {
      loadNodes();
      state.nodesTimer = setInterval(loadNodes, 5000);
      return;
    }
    const keyChanged = r.key !== state.key;
    state.folder = r.folder;
    state.key = r.key;
    if (keyChanged) {
      state.entry = null;
      state.raw = false;
      $('confirm-delete').hidden = true;
    }
    if (state.editor && state.editor.mode === 'edit' && state.editor.key !== r.key) closeEditor();
    renderCrumbs();
    applyPermissions();
    watch(r.folder);
    loadListing();
    if (r.key) loadValue(false);
    else $('value-view').hidden = true;
  }

  function renderCrumbs() {
    const nav = $('crumbs');
    nav.replaceChildren();
    const parts = state.folder.split('/').filter((s) => s !== '');
    const add = (label, path, isHere) => {
      const el = document.createElement(isHere ? 'span' : 'a');
      el.textContent = label;
      el.className = isHere ? 'crumb here' : 'crumb';
      el.setAttribute('data-path', path);
      if (!isHere) el.href = hashFor(path);
      nav.appendChild(el);
    };
    const sep = () => {
      const s = document.createElement('span');
      s.className = 'sep';
      s.textContent = '/';
      nav.appendChild(s);
    };
    // The folder itself is a link too while a key of it is open.
    add('root', '', parts.length === 0 && !state.key);
    let path = '';
    parts.forEach((part, i) => {
      path += part + '/';
      sep();
      add(part, path, i === parts.length - 1 && !state.key);
    });
  }

  // ---------- listing ----------

  async function loadListing() {
    const seq = ++state.listingSeq;
    const folder = state.folder;
    $('listing-title').textContent = folder === '' ? 'Keys at the root' : 'Keys in ' + folder;
    let items;
    try {
      const resp = await api('GET', '/kv/' + encodePath(folder));
      items = await resp.json();
    } catch (e) {
      if (seq !== state.listingSeq) return;
      if (e.status === 404 && folder !== '') {
        // The API answers 404 for a folder with no live key: say so, it is not a failure of the UI.
        renderListing([], 'No keys in ' + folder + ' (empty, or everything in it was deleted).');
        return;
      }
      renderListing([], 'The listing could not be loaded.');
      showError(e, 'Listing ' + (folder || 'the root'));
      return;
    }
    if (seq !== state.listingSeq) return;
    if (!Array.isArray(items)) {
      showError(new ApiError(0, 'unexpected', 'the listing is not a JSON array'), 'Listing');
      return;
    }
    renderListing(items, folder === '' ? 'No keys yet. Create one with “+ New key”.' : 'No keys in ' + folder);
  }

  function renderListing(items, emptyText) {
    const ul = $('listing');
    // An unchanged listing keeps its elements (no flicker, focus stays), only the selection moves.
    const signature = JSON.stringify([state.folder, items, emptyText]);
    if (state.listingSignature === signature) {
      markSelected();
      return;
    }
    state.listingSignature = signature;
    ul.replaceChildren();
    const folders = items.filter((p) => typeof p === 'string' && p.endsWith('/'));
    const keys = items.filter((p) => typeof p === 'string' && !p.endsWith('/'));
    for (const path of folders.concat(keys)) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = hashFor(path);
      a.className = path.endsWith('/') ? 'folder' : 'key';
      a.setAttribute('data-path', path);
      a.textContent = nameOf(path, state.folder);
      li.appendChild(a);
      ul.appendChild(li);
    }
    $('listing-empty').textContent = emptyText || '';
    $('listing-empty').hidden = folders.length + keys.length > 0;
    markSelected();
  }

  // ---------- one value ----------

  async function loadValue(reveal) {
    const seq = ++state.valueSeq;
    const key = state.key;
    let resp;
    let bytes;
    try {
      resp = await api('GET', '/kv/' + encodePath(key), { query: reveal ? { secret: 'true' } : null });
      bytes = new Uint8Array(await resp.arrayBuffer());
    } catch (e) {
      if (seq !== state.valueSeq) return;
      if (e.status === 404) {
        showMissing(key, e.message);
        return;
      }
      showError(e, (reveal ? 'Revealing ' : 'Reading ') + key);
      return;
    }
    if (seq !== state.valueSeq) return;
    const secret = resp.headers.get('X-Cave-Secret');
    state.entry = {
      key,
      version: resp.headers.get('X-Cave-Version') || '',
      contentType: resp.headers.get('Content-Type') || '',
      secret: secret !== null,
      revealed: secret === 'opened',
      bytes,
    };
    renderValue();
  }

  function showMissing(key, message) {
    state.entry = null;
    $('value-view').hidden = false;
    $('value-key').textContent = key;
    for (const id of ['value-version', 'value-type', 'value-size', 'value-format']) $(id).textContent = '—';
    $('value').hidden = true;
    $('value-missing').hidden = false;
    $('value-missing').textContent = 'This key does not exist (' + message + '). It may have been deleted.';
    for (const id of ['btn-reveal', 'btn-hide', 'btn-raw', 'btn-edit', 'btn-delete']) $(id).hidden = true;
  }

  function renderValue() {
    const e = state.entry;
    $('value-view').hidden = false;
    $('value-missing').hidden = true;
    $('value-key').textContent = e.key;
    $('value-version').textContent = e.version;
    const type = $('value-type');
    type.replaceChildren();
    type.append(e.secret && !e.revealed ? '(hidden until revealed)' : e.contentType);
    if (e.secret) {
      const badge = document.createElement('span');
      badge.className = 'badge secret';
      badge.textContent = 'secret';
      type.appendChild(badge);
    }
    const pre = $('value');
    pre.hidden = false;
    pre.className = 'value';
    $('btn-raw').hidden = true;
    if (e.secret && !e.revealed) {
      $('value-size').textContent = '—';
      $('value-format').textContent = 'masked';
      pre.textContent = MASK;
      pre.classList.add('masked');
    } else {
      $('value-size').textContent = e.bytes.length + (e.bytes.length === 1 ? ' byte' : ' bytes');
      const shown = present(e.bytes, e.contentType);
      if (shown.kind === 'json') {
        $('btn-raw').hidden = false;
        $('btn-raw').textContent = state.raw ? 'Pretty' : 'Raw';
      }
      $('value-format').textContent =
        shown.kind === 'json' ? (state.raw ? 'JSON (as stored)' : 'JSON (pretty-printed)') : shown.kind === 'binary' ? 'hex dump (binary)' : 'text';
      pre.textContent = shown.kind === 'json' && state.raw ? shown.raw : shown.text;
      if (shown.kind === 'binary') pre.classList.add('hex');
    }
    $('btn-reveal').hidden = !(e.secret && !e.revealed);
    $('btn-hide').hidden = !(e.secret && e.revealed);
    $('btn-edit').hidden = false;
    $('btn-delete').hidden = false;
    applyPermissions();
    markSelected();
  }

  function markSelected() {
    for (const a of $('listing').querySelectorAll('a')) {
      a.classList.toggle('selected', a.getAttribute('data-path') === state.key);
    }
  }

  /** How to show bytes: UTF-8 text, JSON pretty-printed (by content type, or if it parses as an object or array), or hex. */
  function present(bytes, contentType) {
    let text;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      return { kind: 'binary', text: hexdump(bytes) };
    }
    const mime = (contentType || '').split(';')[0].trim().toLowerCase();
    const jsonType = mime === 'application/json' || mime.endsWith('+json') || mime === 'text/json';
    const t = text.trim();
    if (jsonType || t.startsWith('{') || t.startsWith('[')) {
      try {
        return { kind: 'json', text: JSON.stringify(JSON.parse(text), null, 2), raw: text };
      } catch (e) {
        // not JSON after all: show it as text
      }
    }
    return { kind: 'text', text };
  }

  function hexdump(bytes) {
    const n = Math.min(bytes.length, HEX_LIMIT);
    const lines = [];
    for (let off = 0; off < n; off += 16) {
      let hex = '';
      let ascii = '';
      for (let i = 0; i < 16; i++) {
        if (off + i < n) {
          const b = bytes[off + i];
          hex += b.toString(16).padStart(2, '0') + ' ';
          ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
        } else {
          hex += '   ';
        }
        if (i === 7) hex += ' ';
      }
      lines.push(off.toString(16).padStart(8, '0') + '  ' + hex + ' |' + ascii + '|');
    }
    if (bytes.length > n) lines.push('… ' + (bytes.length - n) + ' more bytes not shown');
    if (bytes.length === 0) lines.push('(empty)');
    return lines.join('\n');
  }

  // ---------- editor ----------

  function openCreate() {
    clearError();
    state.editor = { mode: 'create' };
    $('editor-title').textContent = 'New key';
    $('f-path').value = state.folder;
    $('f-path').readOnly = false;
    $('f-value').value = '';
    $('f-value').placeholder = '';
    $('f-file').value = '';
    $('f-type').value = 'text/plain; charset=utf-8';
    $('f-secret').checked = false;
    $('f-secret').disabled = false;
    $('editor-note').hidden = true;
    $('editor').hidden = false;
    $('f-path').focus();
  }

  function openEdit() {
    clearError();
    const e = state.entry;
    if (!e) return;
    state.editor = { mode: 'edit', key: e.key, version: e.version };
    $('editor-title').textContent = 'Edit ' + e.key;
    $('f-path').value = e.key;
    $('f-path').readOnly = true;
    $('f-file').value = '';
    $('f-secret').checked = e.secret;
    $('f-secret').disabled = true; // changing sealed <-> plain would need the plaintext; re-create the key instead
    const note = [];
    if (e.secret && !e.revealed) {
      // Do not reveal a secret just because someone wants to replace it.
      $('f-value').value = '';
      $('f-value').placeholder = 'new secret value (the current one stays hidden)';
      $('f-type').value = 'text/plain; charset=utf-8';
      note.push('The current value and its content type are not shown; saving replaces both.');
    } else {
      let text = null;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(e.bytes);
      } catch (err) {
        note.push('The value is binary: edit it by uploading a file (typing replaces it with text).');
      }
      $('f-value').value = text === null ? '' : text;
      $('f-value').placeholder = '';
      $('f-type').value = e.contentType;
    }
    $('editor-note').textContent = note.join(' ');
    $('editor-note').hidden = note.length === 0;
    $('editor').hidden = false;
    $('f-value').focus();
  }

  function closeEditor() {
    state.editor = null;
    $('editor').hidden = true;
    // Do not leave a typed secret behind in a hidden form.
    $('f-value').value = '';
    $('f-file').value = '';
  }

  async function save(ev) {
    ev.preventDefault();
    clearError();
    const ed = state.editor;
    if (!ed) return;
    const key = ed.mode === 'edit' ? ed.key : $('f-path').value;
    const problem = localKeyProblem(key);
    if (problem) {
      showError(new ApiError(0, 'invalid_input', problem), 'Saving ' + key);
      return;
    }
    const contentType = $('f-type').value.trim();
    if (!/^[\x20-\x7e]*$/.test(contentType)) {
      showError(new ApiError(0, 'invalid_input', 'content type must be visible ASCII'), 'Saving ' + key);
      return;
    }
    const file = $('f-file').files[0];
    // A Blob without a type sends no Content-Type, so the server applies its default.
    const body = new Blob([file || $('f-value').value], contentType ? { type: contentType } : {});
    const headers = contentType ? { 'Content-Type': contentType } : {};
    const query = { cas: ed.mode === 'create' ? '0' : ed.version };
    if ($('f-secret').checked) query.secret = 'true';
    $('f-save').disabled = true;
    try {
      const resp = await api('PUT', '/kv/' + encodePath(key), { body, headers, query });
      const answer = await resp.json();
      closeEditor();
      notify((ed.mode === 'create' ? 'Created ' : 'Saved ') + key + ' (version ' + answer.version + ')');
      go(key);
    } catch (e) {
      if (e.status === 412) {
        const why =
          ed.mode === 'create'
            ? 'Conflict: “' + key + '” already exists. Open it and edit it instead.'
            : 'Conflict: “' + key + '” was changed by someone else since you opened it (you had version ' +
              ed.version + '). Nothing was saved; your text is kept. Cancel and reopen the key to see the current value.';
        showError(new ApiError(412, e.code, why + ' Server: ' + e.message), '');
      } else {
        showError(e, 'Saving ' + key);
      }
    } finally {
      $('f-save').disabled = false;
    }
  }

  // ---------- delete, reveal ----------

  function askDelete() {
    clearError();
    if (!state.entry) return;
    $('confirm-text').textContent = 'Delete “' + state.entry.key + '”? This cannot be undone.';
    $('confirm-delete').hidden = false;
  }

  async function doDelete() {
    const e = state.entry;
    $('confirm-delete').hidden = true;
    if (!e) return;
    try {
      await api('DELETE', '/kv/' + encodePath(e.key), { query: { cas: e.version } });
    } catch (err) {
      if (err.status === 412) {
        showError(
          new ApiError(412, err.code, 'Conflict: “' + e.key + '” changed since you opened it; nothing was deleted. Server: ' + err.message),
          ''
        );
        loadValue(false);
      } else {
        showError(err, 'Deleting ' + e.key);
      }
      return;
    }
    notify('Deleted ' + e.key);
    closeEditor();
    go(parentOf(e.key));
  }

  // ---------- watch stream ----------

  function setLive(mode) {
    const el = $('live');
    el.className = 'live ' + (mode === 'live' ? 'on' : mode === 'offline' ? 'off' : 'wait');
    el.textContent = mode;
    el.title =
      mode === 'live'
        ? 'Watching ' + (state.esFolder || 'every key') + ': changes show up here as they happen'
        : 'Watch stream: ' + mode;
  }

  function closeWatch() {
    if (state.es) state.es.abort();
    state.es = null;
    state.esFolder = null;
    clearTimeout(state.esRetry);
    setLive('offline');
  }

  /**
   * Follow the watch stream of `folder`. Read with fetch rather than EventSource, which cannot send the
   * token as a header (it would have to go into the URL, and from there into logs and history).
   */
  function watch(folder) {
    if (state.es && state.esFolder === folder) return;
    closeWatch();
    state.esFolder = folder;
    setLive('connecting');
    const ctl = new AbortController();
    state.es = ctl;
    const onEvent = (type, data) => {
      if (state.es !== ctl) return;
      if (type === 'ready') {
        setLive('live');
        // Changes made before this subscription (or while disconnected) were not streamed: re-read once.
        scheduleRefresh(true);
      } else if (type === 'put' || type === 'delete') {
        let entry = null;
        try {
          entry = JSON.parse(data);
        } catch (e) {
          // a malformed event: re-read everything
        }
        changed(entry, type === 'delete');
      } else if (type === 'lagged') {
        scheduleRefresh(true);
      }
    };
    (async () => {
      const resp = await api('GET', '/watch/' + encodePath(folder), { signal: ctl.signal });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let type = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length) onEvent(type, data.join('\n'));
        }
      }
    })()
      .catch(() => {})
      .finally(() => {
        if (state.es !== ctl || ctl.signal.aborted) return;
        // The stream ended or failed (a restart, a refused token): try again shortly.
        setLive('offline');
        state.esRetry = setTimeout(() => {
          if (state.es === ctl) {
            state.es = null;
            if (state.whoami) watch(state.folder);
          }
        }, 5000);
      });
  }

  /** A change below the watched folder. */
  function changed(entry, deleted) {
    const key = entry && entry.key;
    const mine = key && state.key === key;
    if (mine && state.editor && state.editor.mode === 'edit' && state.editor.key === key && entry.version !== state.editor.version) {
      $('editor-note').textContent =
        (deleted ? 'This key was deleted' : 'This key was changed (version ' + entry.version + ')') +
        ' while you were editing: saving will fail with a conflict.';
      $('editor-note').hidden = false;
    }
    scheduleRefresh(!key || mine ? !(state.entry && entry && entry.version === state.entry.version) : false);
  }

  /** Re-read the listing (and the open value if `value`), coalescing bursts of events into one read. */
  function scheduleRefresh(value) {
    state.refreshValue = state.refreshValue || value;
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(() => {
      const withValue = state.refreshValue;
      state.refreshTimer = null;
      state.refreshValue = false;
      if (state.view !== 'keys') return;
      loadListing();
      if (withValue && state.key) loadValue(state.entry ? state.entry.revealed : false);
    }, 100);
  }

  // ---------- nodes ----------

  async function loadNodes() {
    let nodes;
    let note;
    try {
      const resp = await api('GET', '/cluster/nodes');
      nodes = await resp.json();
      note = 'Every node this node knows of.';
    } catch (e) {
      if (e.status !== 404) {
        showError(e, 'Loading the node list');
        return;
      }
      // Single-node builds have no cluster route: show this node from its system info.
      try {
        const info = await (await api('GET', '/system/info')).json();
        nodes = [
          {
            id: info.node_id,
            http_addr: info.http_addr,
            grpc_addr: info.grpc_addr,
            status: 'up',
            local: true,
            info,
          },
        ];
        note = 'This node (no cluster membership: ' + (info.mode || 'dev') + ' mode).';
      } catch (e2) {
        showError(e2, 'Loading this node’s info');
        return;
      }
    }
    if (state.view !== 'nodes') return;
    if (!Array.isArray(nodes)) {
      showError(new ApiError(0, 'unexpected', 'the node list is not a JSON array'), 'Loading the node list');
      return;
    }
    $('nodes-note').textContent = note;
    const box = $('nodes');
    box.replaceChildren();
    for (const n of nodes) box.appendChild(nodeCard(n));
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
    if (n.info) {
      row('Version', n.info.version);
      row('Uptime', n.info.uptime_seconds + ' s');
      row('Keys', n.info.keys);
    } else {
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
    card.appendChild(dl);
    return card;
  }

  // ---------- wiring ----------

  function init() {
    $('error-close').addEventListener('click', clearError);
    $('btn-new').addEventListener('click', openCreate);
    $('editor').addEventListener('submit', save);
    $('f-cancel').addEventListener('click', () => {
      clearError();
      closeEditor();
    });
    $('btn-edit').addEventListener('click', openEdit);
    $('btn-delete').addEventListener('click', askDelete);
    $('btn-delete-yes').addEventListener('click', doDelete);
    $('btn-delete-no').addEventListener('click', () => {
      $('confirm-delete').hidden = true;
    });
    $('btn-reveal').addEventListener('click', () => {
      clearError();
      loadValue(true);
    });
    $('btn-hide').addEventListener('click', () => loadValue(false));
    $('btn-raw').addEventListener('click', () => {
      state.raw = !state.raw;
      renderValue();
    });
    $('btn-nodes-refresh').addEventListener('click', () => {
      clearError();
      loadNodes();
    });
    $('login').addEventListener('submit', signIn);
    $('btn-signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', () => {
      if (state.whoami) route();
    });
    start();
  }

  init();
})();
