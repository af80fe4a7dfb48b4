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
// together with the listing of its folder. `#nodes` is the cluster view (nodes.js).
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
    reveal: false, // whether the last read of the open value asked to open its secret
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
    listing: null, // the loaded part of the current folder, see freshListing
    counting: null, // the folder whose key count is being read
    folderDelete: null, // {folder, count} while a folder delete waits for its typed confirmation
    moreObserver: null, // loads the next page when the end of the list scrolls into view
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

  /** Whether the token may `cap` on every key below `prefix` (a folder delete needs that). */
  function mayAllBelow(cap, prefix) {
    const rules = (state.whoami && state.whoami.rules) || [];
    return may(cap, prefix) && rules.every((r) => !r.prefix.startsWith(prefix) || r.allow.includes(cap));
  }

  const CAPS = ['list', 'read', 'write', 'delete', 'secret'];

  /** Grey out what the token may not do here, and say what it may. */
  function applyPermissions() {
    const grey = (id, allowed, why) => {
      $(id).disabled = !allowed;
      $(id).title = allowed ? '' : why;
    };
    const folder = state.folder;
    grey('btn-new', maySomeBelow('write', folder), 'your token may not write here');
    grey('btn-delete-folder', folder !== '' && mayAllBelow('delete', folder), 'your token may not delete every key of this folder');
    if (state.key) {
      grey('btn-edit', may('write', state.key), 'your token may not write this key');
      grey('btn-delete', may('delete', state.key), 'your token may not delete this key');
      grey('btn-reveal', may('secret', state.key), 'your token may not open secrets here');
      grey('btn-download', may('read', state.key), 'your token may not read this key');
    }
    const w = state.whoami;
    const perms = $('perms');
    perms.replaceChildren();
    if (!w || w.acl === false) {
      perms.hidden = true;
    } else {
      perms.hidden = false;
      const where = state.key || folder;
      perms.append('Your token ' + (w.admin ? '(admin) ' : '') + 'in ' + (where || 'the root') + ': ');
      for (const cap of CAPS) {
        const allowed = state.key ? may(cap, where) : maySomeBelow(cap, where);
        const c = document.createElement('span');
        c.className = allowed ? 'cap' : 'cap no';
        c.textContent = cap;
        c.title = allowed ? 'allowed' : 'not allowed';
        perms.appendChild(c);
      }
    }
    const tab = $('tab-nodes');
    // The member list needs admin; without it the view shows this node from its own information.
    tab.classList.toggle('disabled', !!w && w.acl !== false && !w.admin);
    tab.title = w && w.acl !== false && !w.admin ? 'Your token is not admin: the view shows this node only' : '';
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
    // The watch stream (and so the live badge) runs on every view: on the node list it follows the last
    // folder shown, so that going back to it is current at once.
    watch(r.view === 'nodes' ? state.folder : r.folder);
    if (r.view === 'nodes') {
      nodes.show();
      return;
    }
    nodes.hide();
    const keyChanged = r.key !== state.key;
    if (r.folder !== state.folder || !state.listing) {
      state.listing = freshListing(r.folder);
      state.listingSignature = null;
      $('filter').value = '';
      $('confirm-folder').hidden = true;
      $('listing').scrollTop = 0;
    }
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
    loadListing();
    if (r.key) loadValue(false);
    else $('value-view').hidden = true;
    showPlaceholder();
  }

  /** The right pane's hint, while neither a key nor the editor is in it. */
  function showPlaceholder() {
    $('placeholder').hidden = !$('value-view').hidden || !$('editor').hidden;
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
  //
  // A folder is read a page at a time (`?meta=true&limit=&after=`, byte order, each page costs what it holds
  // on the server): the first page shows at once, the next one loads when the end of the list scrolls into
  // view or on "Load more". What is loaded is shown folders first, in natural order (`k2` before `k10`). The
  // filter box narrows what is loaded as one types; "Search below" asks the server for every key below the
  // folder whose name contains the text (`?recurse=true&contains=`), page by page as well.

  const PAGE_LIMIT = 1000;
  const SEARCH_LIMIT = 200;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  function naturalOrder(a, b) {
    if (a.folder !== b.folder) return a.folder ? -1 : 1;
    return collator.compare(a.key, b.key) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  }

  /** The listing state of the current folder. */
  function freshListing(folder) {
    return { folder, mode: 'list', query: '', entries: [], next: null, count: null, loading: false, emptyText: '' };
  }

  function listingQuery(l, after, limit) {
    if (l.mode === 'search') {
      const q = { recurse: 'true', contains: l.query, limit: String(limit || SEARCH_LIMIT) };
      if (after) q.after = after;
      return q;
    }
    const q = { meta: 'true', limit: String(limit || PAGE_LIMIT) };
    if (after) q.after = after;
    return q;
  }

  /** Read the folder again from its start, as many entries as are loaded now (a live refresh keeps the scroll). */
  async function loadListing() {
    const folder = state.folder;
    if (!state.listing || state.listing.folder !== folder) state.listing = freshListing(folder);
    const l = state.listing;
    const seq = ++state.listingSeq;
    $('listing-title').textContent = folder === '' ? 'Keys at the root' : 'Keys in ' + folder;
    const first = l.entries.length === 0 && l.mode === 'list';
    if (first) performance.mark('cave-listing-start');
    const want = Math.min(Math.max(l.entries.length, l.mode === 'search' ? SEARCH_LIMIT : PAGE_LIMIT), 10000);
    let page;
    try {
      page = await (await api('GET', '/kv/' + encodePath(folder), { query: listingQuery(l, null, want) })).json();
    } catch (e) {
      if (seq !== state.listingSeq) return;
      l.entries = [];
      l.next = null;
      if (e.status === 404 && folder !== '') {
        // The API answers 404 for a folder with no live key: say so, it is not a failure of the UI.
        l.emptyText = 'No keys in ' + folder + ' (empty, or everything in it was deleted).';
      } else {
        l.emptyText = 'The listing could not be loaded.';
        showError(e, 'Listing ' + (folder || 'the root'));
      }
      renderListing();
      return;
    }
    if (seq !== state.listingSeq) return;
    if (!page || !Array.isArray(page.entries)) {
      showError(new ApiError(0, 'unexpected', 'the listing is not {"entries": [...]}'), 'Listing');
      return;
    }
    l.entries = page.entries.map(normalise);
    l.next = page.next || null;
    l.emptyText =
      l.mode === 'search'
        ? 'No key below ' + (folder || 'the root') + ' has “' + l.query + '” in its name.'
        : folder === ''
          ? 'No keys yet. Create one with “+ New key”.'
          : 'No keys in ' + folder;
    renderListing();
    if (first) {
      performance.mark('cave-listing-shown');
      performance.clearMeasures('cave-listing');
      performance.measure('cave-listing', 'cave-listing-start', 'cave-listing-shown');
    }
    if (l.mode === 'list') loadCount();
  }

  /** A listing entry as the page shows it; a search hit is a key (folders are not searched). */
  function normalise(e) {
    return {
      key: String(e.key),
      folder: e.folder === true,
      contentType: e.content_type || '',
      secret: e.secret === true,
      size: typeof e.size === 'number' ? e.size : null,
      modifiedMs: typeof e.modified_ms === 'number' ? e.modified_ms : null,
    };
  }

  /** The folder's key count. It is linear in the folder on the server: while one is on its way, a burst of
   * live refreshes asks for no other (the next refresh after it counts again). */
  async function loadCount() {
    const folder = state.folder;
    if (state.counting === folder) return;
    state.counting = folder;
    try {
      const answer = await (await api('GET', '/kv/' + encodePath(folder), { query: { count: 'true' } })).json();
      // Any answer for the folder still shown will do, whichever refresh asked for it.
      if (!state.listing || state.listing.folder !== folder) return;
      state.listing.count = typeof answer.count === 'number' ? answer.count : null;
    } catch (e) {
      if (!state.listing || state.listing.folder !== folder) return;
      state.listing.count = null; // the count is a help, the listing itself is what matters
    } finally {
      if (state.counting === folder) state.counting = null;
    }
    renderCount();
  }

  async function loadMore() {
    const l = state.listing;
    if (!l || !l.next || l.loading) return;
    l.loading = true;
    const seq = state.listingSeq;
    try {
      const resp = await api('GET', '/kv/' + encodePath(l.folder), { query: listingQuery(l, l.next) });
      const page = await resp.json();
      if (seq !== state.listingSeq || state.listing !== l) return;
      l.entries = l.entries.concat(page.entries.map(normalise));
      l.next = page.next || null;
      renderListing();
    } catch (e) {
      showError(e, 'Listing more of ' + (l.folder || 'the root'));
    } finally {
      l.loading = false;
    }
  }

  function renderCount() {
    const l = state.listing;
    const loaded = l.entries.length;
    let text = '';
    if (l.mode === 'search') text = loaded + (l.next ? '+ found' : ' found');
    else if (l.count !== null) text = loaded.toLocaleString('en') + ' shown · ' + l.count.toLocaleString('en') + (l.count === 1 ? ' key' : ' keys') + ' below';
    else text = loaded.toLocaleString('en') + (l.next ? '+' : '') + ' shown';
    $('listing-count').textContent = text;
    const folderActions = state.folder !== '' && l.mode === 'list';
    $('btn-delete-folder').hidden = !folderActions;
    $('btn-copy-folder').hidden = state.folder === '';
  }

  const ICONS = {
    folder: 'M2 5.5h5l1.5 2H16v7.5H2z',
    key: 'M4 2h7l3 3v11H4z M11 2v3h3',
    lock: 'M5 8V6a3 3 0 0 1 6 0v2h1v6H4V8zm2 0h2V6a1 1 0 0 0-2 0z',
  };

  function icon(kind, cls) {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', kind === 'lock' ? '0 0 16 16' : '0 0 18 18');
    svg.setAttribute('class', cls);
    svg.setAttribute('aria-hidden', 'true');
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('d', ICONS[kind]);
    svg.appendChild(path);
    return svg;
  }

  function span(cls, text) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function sizeText(n) {
    if (n === null) return '';
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }

  /** How long ago a Unix-epoch millisecond time was, in words an operator reads at a glance. */
  function age(ms) {
    if (ms === null) return '';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 45) return 'just now';
    if (s < 5400) return Math.max(1, Math.round(s / 60)) + ' min ago';
    if (s < 129600) return Math.round(s / 3600) + ' h ago';
    if (s < 86400 * 60) return Math.round(s / 86400) + ' d ago';
    return new Date(ms).toISOString().slice(0, 10);
  }

  /** When a Unix-epoch millisecond time in the future comes: an expiry. */
  function until(ms) {
    const s = (ms - Date.now()) / 1000;
    if (s <= 0) return 'now';
    if (s < 90) return 'in ' + Math.ceil(s) + ' s';
    if (s < 5400) return 'in ' + Math.round(s / 60) + ' min';
    if (s < 129600) return 'in ' + Math.round(s / 3600) + ' h';
    return new Date(ms).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function row(e, base) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = hashFor(e.key);
    a.className = e.folder ? 'folder' : 'key';
    a.setAttribute('data-path', e.key);
    a.appendChild(icon(e.folder ? 'folder' : 'key', 'ico'));
    a.appendChild(span('name', nameOf(e.key, base)));
    if (e.secret) {
      const lock = icon('lock', 'ico lock');
      lock.setAttribute('aria-label', 'secret');
      lock.removeAttribute('aria-hidden');
      a.appendChild(lock);
    }
    if (!e.folder) {
      const facts = document.createElement('span');
      facts.className = 'facts';
      facts.append(
        span('type', e.secret ? 'secret' : e.contentType.split(';')[0]),
        span('size', sizeText(e.size)),
        span('age', age(e.modifiedMs))
      );
      if (e.modifiedMs !== null) facts.lastChild.title = new Date(e.modifiedMs).toISOString();
      a.appendChild(facts);
    }
    li.appendChild(a);
    return li;
  }

  function renderListing() {
    const l = state.listing;
    const ul = $('listing');
    const filter = l.mode === 'list' ? $('filter').value.trim().toLowerCase() : '';
    let shown = l.entries;
    if (filter) shown = shown.filter((e) => nameOf(e.key, l.folder).toLowerCase().includes(filter));
    shown = shown.slice().sort(naturalOrder);
    // An unchanged listing keeps its elements (no flicker, focus and scroll stay), only the selection moves.
    const signature = JSON.stringify([l.folder, l.mode, l.query, filter, shown.map((e) => [e.key, e.size, e.modifiedMs, e.secret, e.contentType]), l.next]);
    if (state.listingSignature !== signature) {
      state.listingSignature = signature;
      const frag = document.createDocumentFragment();
      for (const e of shown) frag.appendChild(row(e, l.folder));
      if (l.next) {
        const sentinel = document.createElement('li');
        sentinel.className = 'sentinel';
        frag.appendChild(sentinel);
        state.moreObserver.disconnect();
        state.moreObserver.observe(sentinel);
      }
      ul.replaceChildren(frag);
    }
    $('btn-more').hidden = !l.next;
    const note = $('filter-note');
    if (l.mode === 'search') {
      note.hidden = false;
      note.textContent = 'Keys below ' + (l.folder || 'the root') + ' whose name contains “' + l.query + '”. Clear the box to go back to the folder.';
    } else if (filter && l.next) {
      note.hidden = false;
      note.textContent = 'Filtering the ' + l.entries.length + ' loaded entries; “Search below” looks through every key.';
    } else {
      note.hidden = true;
    }
    $('listing-empty').textContent = filter && l.entries.length ? 'Nothing loaded here matches “' + filter + '”.' : l.emptyText;
    $('listing-empty').hidden = shown.length > 0;
    renderCount();
    markSelected();
  }

  function onFilterInput() {
    const text = $('filter').value.trim();
    if (state.listing.mode === 'search' && text !== state.listing.query) {
      // Typing after a search goes back to filtering the folder itself.
      state.listing = freshListing(state.folder);
      loadListing();
      return;
    }
    renderListing();
  }

  function search(ev) {
    ev.preventDefault();
    const text = $('filter').value.trim();
    if (!text) return;
    state.listing = freshListing(state.folder);
    state.listing.mode = 'search';
    state.listing.query = text;
    loadListing();
  }

  // ---------- folder delete ----------

  async function askDeleteFolder() {
    clearError();
    const folder = state.folder;
    const box = $('confirm-folder');
    $('confirm-folder-input').value = '';
    $('btn-delete-folder-yes').disabled = true;
    let count;
    try {
      count = (await (await api('GET', '/kv/' + encodePath(folder), { query: { count: 'true' } })).json()).count;
    } catch (e) {
      showError(e, 'Counting the keys of ' + folder);
      return;
    }
    state.folderDelete = { folder, count };
    $('confirm-folder-text').textContent =
      'Delete the folder “' + folder + '” and all ' + count + (count === 1 ? ' key' : ' keys') + ' below it? This cannot be undone.';
    box.hidden = false;
    $('confirm-folder-input').focus();
  }

  async function doDeleteFolder() {
    const d = state.folderDelete;
    if (!d || $('confirm-folder-input').value !== d.folder) return;
    $('confirm-folder').hidden = true;
    state.folderDelete = null;
    let answer;
    try {
      answer = await (await api('DELETE', '/kv/' + encodePath(d.folder), { query: { recurse: 'true' } })).json();
    } catch (e) {
      showError(e, 'Deleting the folder ' + d.folder);
      return;
    }
    notify('Deleted the folder ' + d.folder + ' (' + answer.deleted + (answer.deleted === 1 ? ' key)' : ' keys)'));
    go(parentOf(d.folder.slice(0, -1)));
  }

  /** Copy `text` to the clipboard, saying so; where the page may not, show it to copy by hand. */
  async function copyText(text, what) {
    try {
      await navigator.clipboard.writeText(text);
      notify('Copied ' + what + ': ' + text);
    } catch (e) {
      notify('Copy it from here (the browser refused the clipboard): ' + text);
    }
  }

  // ---------- one value ----------

  async function loadValue(reveal) {
    const seq = ++state.valueSeq;
    // What was last asked for, so that a refresh started before this read's answer (a change event of this
    // key) asks for the same: reading `state.entry.revealed` there would undo a Reveal still in flight.
    state.reveal = !!reveal;
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
      doc: resp.headers.get('X-Cave-Type') === 'doc',
      expiresMs: resp.headers.has('X-Cave-Expires') ? Number(resp.headers.get('X-Cave-Expires')) : null,
      lease: resp.headers.get('X-Cave-Lease'),
      bytes,
    };
    $('doc-history').hidden = true;
    renderValue();
  }

  function showMissing(key, message) {
    state.entry = null;
    $('value-view').hidden = false;
    $('value-key').textContent = key;
    for (const id of ['value-version', 'value-age', 'value-expires', 'value-type', 'value-size', 'value-format']) $(id).textContent = '—';
    $('value').hidden = true;
    $('value-missing').hidden = false;
    $('value-missing').textContent = 'This key does not exist (' + message + '). It may have been deleted.';
    for (const id of ['btn-reveal', 'btn-hide', 'btn-raw', 'btn-history', 'btn-edit', 'btn-delete', 'btn-download']) $(id).hidden = true;
    $('doc-history').hidden = true;
    showPlaceholder();
  }

  /** The Unix-epoch milliseconds of a version ("HLC-NODE"): its HLC's physical part. */
  function versionMs(version) {
    const m = /^([0-9]+)-/.exec(version || '');
    return m ? Number(BigInt(m[1]) >> 16n) : null;
  }

  /** Save the open value as a file: the bytes as shown (a secret only once revealed; sealed, it is the envelope). */
  function download() {
    const e = state.entry;
    if (!e) return;
    const blob = new Blob([e.bytes], { type: e.secret && !e.revealed ? 'text/plain' : e.contentType || 'application/octet-stream' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = e.key.slice(e.key.lastIndexOf('/') + 1) + (e.secret && !e.revealed ? '.sealed' : '');
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    notify('Downloading ' + e.key);
  }

  /** A document's changes (`?history=true`), oldest first: who, when, a short hash and what changed. */
  async function loadHistory() {
    const e = state.entry;
    if (!e || !e.doc) return;
    const seq = state.valueSeq;
    let changes;
    try {
      const query = { history: 'true' };
      if (e.revealed) query.secret = 'true';
      const resp = await api('GET', '/kv/' + encodePath(e.key), { query });
      changes = (await resp.json()).changes || [];
    } catch (err) {
      showError(err, 'Reading the history of ' + e.key);
      return;
    }
    if (seq !== state.valueSeq) return;
    const list = $('doc-changes');
    list.replaceChildren();
    for (const c of changes) {
      const item = document.createElement('li');
      const hash = document.createElement('span');
      hash.className = 'mono';
      hash.textContent = String(c.hash || '').slice(0, 12);
      hash.title = String(c.hash || '');
      const when = c.time_ms ? new Date(c.time_ms).toISOString() : 'time unknown';
      item.append(hash, ' · ' + when + ' · node ' + (c.node || '?') + (c.summary ? ' · ' + c.summary : ''));
      list.appendChild(item);
    }
    if (changes.length === 0) {
      const item = document.createElement('li');
      item.textContent = 'no changes';
      list.appendChild(item);
    }
    $('doc-history').hidden = false;
  }

  function renderValue() {
    const e = state.entry;
    $('value-view').hidden = false;
    $('value-missing').hidden = true;
    $('value-key').textContent = e.key;
    $('value-version').textContent = e.version;
    const ms = versionMs(e.version);
    $('value-age').textContent = ms === null ? '—' : age(ms);
    $('value-age').title = ms === null ? '' : new Date(ms).toISOString();
    $('value-expires').textContent = e.expiresMs === null ? 'never' : until(e.expiresMs);
    $('value-expires').title = e.expiresMs === null ? '' : new Date(e.expiresMs).toISOString();
    $('value-lease').textContent = e.lease === null ? 'none' : `${e.lease} (deleted when it ends)`;
    const type = $('value-type');
    type.replaceChildren();
    type.append(e.secret && !e.revealed ? '(hidden until revealed)' : e.contentType);
    if (e.secret) {
      const badge = document.createElement('span');
      badge.className = 'badge secret';
      badge.textContent = 'secret';
      type.appendChild(badge);
    }
    if (e.doc) {
      const badge = document.createElement('span');
      badge.className = 'badge doc';
      badge.textContent = 'document';
      badge.title = 'An Automerge document: concurrent edits of different fields merge, counters add up';
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
    $('btn-history').hidden = !e.doc || (e.secret && !e.revealed);
    $('btn-reveal').hidden = !(e.secret && !e.revealed);
    $('btn-hide').hidden = !(e.secret && e.revealed);
    $('btn-edit').hidden = false;
    $('btn-delete').hidden = false;
    $('btn-download').hidden = false;
    showPlaceholder();
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
    $('f-doc').checked = false;
    $('f-doc').disabled = false;
    $('editor-note').hidden = true;
    $('editor').hidden = false;
    showPlaceholder();
    $('f-path').focus();
  }

  function openEdit() {
    clearError();
    const e = state.entry;
    if (!e) return;
    state.editor = { mode: 'edit', key: e.key, version: e.version, doc: e.doc, base: e.doc ? docJson(e.bytes) : null };
    $('editor-title').textContent = 'Edit ' + e.key;
    $('f-path').value = e.key;
    $('f-path').readOnly = true;
    $('f-file').value = '';
    $('f-secret').checked = e.secret;
    $('f-secret').disabled = true; // changing sealed <-> plain would need the plaintext; re-create the key instead
    $('f-doc').checked = e.doc;
    $('f-doc').disabled = true; // saving a document applies the difference; a plain PUT would replace it
    const note = [];
    if (e.doc) note.push('Saving writes only the fields you change, as one change: edits made elsewhere meanwhile still merge.');
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
    showPlaceholder();
    $('f-value').focus();
  }

  function closeEditor() {
    state.editor = null;
    $('editor').hidden = true;
    // Do not leave a typed secret behind in a hidden form.
    $('f-value').value = '';
    $('f-file').value = '';
    showPlaceholder();
  }

  /** The JSON of a document's bytes as read, or null if they are not (a sealed document not revealed). */
  function docJson(bytes) {
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (e) {
      return null;
    }
  }

  /**
   * The RFC 7396 merge patch that turns `from` into `to` (objects recurse, a removed field is null, anything
   * else is replaced whole), or undefined when they are equal. A null inside `to` cannot be said in a merge
   * patch (it means "remove"): `null` is returned for that case, and the caller replaces the document.
   */
  function mergePatch(from, to) {
    const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
    if (!isObject(from) || !isObject(to)) {
      if (JSON.stringify(from) === JSON.stringify(to)) return undefined;
      return containsNull(to) ? null : to;
    }
    const patch = {};
    for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
    for (const k of Object.keys(to)) {
      if (to[k] === null) {
        if (from[k] !== null) return null;
        continue;
      }
      const sub = k in from ? mergePatch(from[k], to[k]) : to[k];
      if (sub === null) return null;
      if (sub !== undefined) patch[k] = sub;
    }
    return Object.keys(patch).length ? patch : undefined;
  }

  function containsNull(v) {
    if (v === null) return true;
    if (typeof v !== 'object') return false;
    return Object.values(v).some(containsNull);
  }

  /**
   * Save an edited document as the merge patch from the document as it was opened to the text: only the
   * fields this edit changed are written, so edits made elsewhere meanwhile (other fields, counter
   * increments) survive. Without a version check, since the document merges.
   */
  async function saveDocument(ed) {
    let edited;
    try {
      edited = JSON.parse($('f-value').value);
    } catch (e) {
      showError(new ApiError(0, 'invalid_input', 'a document is a JSON object: ' + e.message), 'Saving ' + ed.key);
      return;
    }
    if (edited === null || typeof edited !== 'object' || Array.isArray(edited)) {
      showError(new ApiError(0, 'invalid_input', 'a document is a JSON object'), 'Saving ' + ed.key);
      return;
    }
    const patch = mergePatch(ed.base, edited);
    if (patch === undefined) {
      closeEditor();
      notify('No changes to ' + ed.key);
      return;
    }
    $('f-save').disabled = true;
    try {
      const resp =
        patch === null
          ? await api('PUT', '/kv/' + encodePath(ed.key), {
              body: JSON.stringify(edited),
              headers: { 'Content-Type': 'application/json' },
              query: { doc: 'true' },
            })
          : await api('PATCH', '/kv/' + encodePath(ed.key), {
              body: JSON.stringify(patch),
              headers: { 'Content-Type': 'application/merge-patch+json' },
            });
      const answer = await resp.json();
      closeEditor();
      notify('Saved ' + ed.key + ' (version ' + answer.version + ')');
      go(ed.key);
    } catch (e) {
      showError(e, 'Saving ' + ed.key);
    } finally {
      $('f-save').disabled = false;
    }
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
    if (ed.mode === 'edit' && ed.doc && ed.base !== null) {
      await saveDocument(ed);
      return;
    }
    const file = $('f-file').files[0];
    // A Blob without a type sends no Content-Type, so the server applies its default.
    const body = new Blob([file || $('f-value').value], contentType ? { type: contentType } : {});
    const headers = contentType ? { 'Content-Type': contentType } : {};
    const query = { cas: ed.mode === 'create' ? '0' : ed.version };
    if ($('f-secret').checked) query.secret = 'true';
    if ($('f-doc').checked) query.doc = 'true';
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
      if (withValue && state.key) loadValue(state.reveal);
    }, 100);
  }

  // ---------- wiring ----------

  const nodes = window.CaveNodes({ api, showError, ApiError, visible: () => state.view === 'nodes' });

  function init() {
    $('error-close').addEventListener('click', clearError);
    $('btn-new').addEventListener('click', openCreate);
    $('editor').addEventListener('submit', save);
    $('f-cancel').addEventListener('click', () => {
      clearError();
      closeEditor();
    });
    $('btn-edit').addEventListener('click', openEdit);
    $('btn-history').addEventListener('click', loadHistory);
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
      nodes.refresh();
    });
    // `change` too: a field emptied by script or by the browser's own clear button sends no `input`.
    for (const type of ['input', 'change', 'search']) $('filter').addEventListener(type, onFilterInput);
    $('filter-form').addEventListener('submit', search);
    $('btn-more').addEventListener('click', loadMore);
    state.moreObserver = new IntersectionObserver((seen) => {
      if (seen.some((e) => e.isIntersecting)) loadMore();
    });
    $('btn-copy').addEventListener('click', () => state.entry && copyText(state.entry.key, 'the key path'));
    $('btn-copy-folder').addEventListener('click', () => copyText(state.folder, 'the folder path'));
    $('btn-download').addEventListener('click', download);
    $('btn-delete-folder').addEventListener('click', askDeleteFolder);
    $('confirm-folder-input').addEventListener('input', () => {
      $('btn-delete-folder-yes').disabled = !state.folderDelete || $('confirm-folder-input').value !== state.folderDelete.folder;
    });
    $('btn-delete-folder-yes').addEventListener('click', doDeleteFolder);
    $('btn-delete-folder-no').addEventListener('click', () => {
      state.folderDelete = null;
      $('confirm-folder').hidden = true;
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
