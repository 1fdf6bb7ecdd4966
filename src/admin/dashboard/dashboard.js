// Switchyard ops dashboard: the admin API rendered for someone paged at 3am.
// Plain browser JavaScript, no build step. Everything that comes from the API
// is put on the page as text (textContent / text nodes), never as HTML, and
// only http(s) URLs become links.
'use strict';

(() => {
  const TOKEN_KEY = 'switchyard.adminToken';
  const PAGE_SIZE = 100; // dead letters per "load more"
  const COUNT_PAGE = 500; // the API's largest page, used to count before a bulk replay
  const REFRESH_MS = 15000; // inventory auto-refresh
  const TICK_MS = 2000; // refresh check; the inventory is reloaded this often while a route drains
  const PROGRESS_MS = 1000; // replay-job progress poll
  const FILTER_KEYS = ['route', 'owner', 'source', 'reason'];
  const REASONS = ['rejected', 'exhausted', 'unroutable', 'undecodable'];

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    routes: [], // last inventory
    inventoryLoaded: false,
    filter: { route: '', owner: '', source: '', reason: '' }, // the applied filter
    items: [], // dead letters shown
    nextCursor: null,
    listGeneration: 0, // ignores answers to superseded list requests
    bulkGeneration: 0,
    detailId: null,
    timer: null,
    lastRefresh: 0,
    flowGeneration: 0, // ignores answers for a pause/resume panel since closed
    replayJob: null, // id of the replay job whose progress is shown
    replayTimer: null,
  };

  // ---- DOM helpers: text only ------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
  }

  /** An http(s) URL as a link; anything else (javascript:, relative...) as text. */
  function link(url, text) {
    let href = null;
    try {
      const parsed = new URL(String(url));
      if (parsed.protocol === 'https:' || parsed.protocol === 'http:') href = parsed.href;
    } catch {
      href = null;
    }
    if (!href) return el('span', {}, text ?? String(url));
    return el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, text ?? String(url));
  }

  function contact(text) {
    if (!text) return null;
    if (/^[^\s@<>"]+@[^\s@<>"]+\.[^\s@<>"]+$/.test(text)) {
      return el('a', { href: 'mailto:' + text }, text);
    }
    return el('span', {}, text);
  }

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many ?? one + 's'}`;

  // ---- time ------------------------------------------------------------------

  function parseTime(text) {
    if (!text) return null;
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function localTime(text) {
    const d = parseTime(text);
    if (!d) return text ? String(text) : '—';
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function ago(text) {
    const d = parseTime(text);
    if (!d) return '';
    const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
    if (s < 10) return 'just now';
    if (s < 90) return `${s} s ago`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  }

  /** A lag in seconds as `42 s`, `7 min 12 s`, `3 h 5 min`. */
  function seconds(value) {
    const s = Math.floor(value);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function timeNode(text, never) {
    if (!text) return el('span', { class: 'muted' }, never ?? '—');
    return el('time', { datetime: text, title: text }, localTime(text),
      el('span', { class: 'ago' }, ago(text)));
  }

  function utcOffset() {
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes < 0 ? '−' : '+';
    const abs = Math.abs(minutes);
    return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
  }

  // ---- messages --------------------------------------------------------------

  function showError(text) {
    $('banner-text').textContent = text;
    $('banner').hidden = false;
  }

  function hideError() {
    $('banner').hidden = true;
    $('banner-text').textContent = '';
  }

  function notify(text) {
    const notice = $('notice');
    notice.textContent = text;
    notice.hidden = !text;
  }

  // ---- API ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }

    describe(action) {
      if (this.status === 0) return `${action} failed: ${this.message}`;
      return `${action} failed: ${this.status} ${this.code}: ${this.message}`;
    }
  }

  async function api(method, path, body) {
    if (!state.token) throw new ApiError(401, 'unauthorized', 'not signed in');
    const headers = { Authorization: 'Bearer ' + state.token, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      // Relative: works behind a proxy that mounts the admin listener on a sub-path.
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, 'unreachable', `cannot reach the admin API (${err.message}); is the gateway running?`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (response.status === 401) {
      signOut('The gateway refused the admin token (401 unauthorized): it is wrong, or no longer ' +
        'in the config. Enter a valid admin token.');
      throw new ApiError(401, 'unauthorized', 'the admin token was refused');
    }
    if (!response.ok) {
      const code = (data && typeof data.error === 'string') ? data.error : `http_${response.status}`;
      const message = (data && typeof data.message === 'string') ? data.message
        : (text.slice(0, 300) || response.statusText || 'no details');
      throw new ApiError(response.status, code, message);
    }
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
    }
    const text = search.toString();
    return text ? '?' + text : '';
  }

  /** Runs an API call and shows its failure; a 401 has already gone to the token form. */
  async function attempt(action, call) {
    try {
      return { ok: true, value: await call() };
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return { ok: false, error: err };
      showError(err instanceof ApiError ? err.describe(action) : `${action} failed: ${err}`);
      return { ok: false, error: err };
    }
  }

  // ---- session ---------------------------------------------------------------

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage disabled: the token lives in memory until the page closes.
    }
  }

  function showSignin(message) {
    $('app').hidden = true;
    $('session').hidden = true;
    $('signin').hidden = false;
    const box = $('signin-message');
    box.textContent = message || '';
    box.hidden = !message;
    $('summary').textContent = '';
    document.title = 'Switchyard — sign in';
    $('token').focus();
  }

  function signOut(message) {
    state.token = null;
    storeToken(null);
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    state.listGeneration += 1;
    state.bulkGeneration += 1;
    // Nothing fetched with the token stays on the page.
    state.routes = [];
    state.inventoryLoaded = false;
    state.items = [];
    state.detailId = null;
    clear($('routes-table').tBodies[0]);
    clear($('dl-table').tBodies[0]);
    clear($('detail'));
    $('detail').hidden = true;
    hideBulk();
    hideFlow();
    hideReplayJob();
    hideError();
    notify('');
    showSignin(message);
  }

  async function signIn(token) {
    state.token = token;
    const result = await attempt('Signing in', () => api('GET', 'admin/routes'));
    if (!result.ok) {
      if (result.error.status !== 401) {
        state.token = null;
        showSignin(result.error instanceof ApiError ? result.error.describe('Signing in') : String(result.error));
      }
      return;
    }
    storeToken(token);
    hideError();
    startApp(result.value);
  }

  function startApp(inventory) {
    $('signin').hidden = true;
    $('app').hidden = false;
    $('session').hidden = false;
    if (inventory) renderInventory(inventory);
    else refreshInventory();
    loadDeadLetters(false);
    showRunningReplay();
    if (state.timer) clearInterval(state.timer);
    state.timer = setInterval(() => {
      if (!state.token || document.visibilityState !== 'visible') return;
      // Faster while held jobs drain, so the operator who resumed sees it move.
      const draining = state.routes.some((r) => !r.paused && isNum(r.held) && r.held > 0);
      if (draining || Date.now() - state.lastRefresh >= REFRESH_MS) refreshInventory();
    }, TICK_MS);
  }

  // ---- inventory -------------------------------------------------------------

  async function refreshInventory() {
    state.lastRefresh = Date.now();
    const result = await attempt('Loading the routes', () => api('GET', 'admin/routes'));
    if (result.ok) renderInventory(result.value);
  }

  // The health rule is the gateway's (`health` of GET /admin/routes, shown
  // by the CLI too); the page only picks how each status looks.
  const HEALTH = {
    failing: { level: 'bad', label: 'FAILING', mark: '✖' },
    warning: { level: 'warn', label: 'WARNING', mark: '▲' },
    ok: { level: 'ok', label: 'OK', mark: '✔' },
    unknown: { level: 'unknown', label: 'UNKNOWN', mark: '?' },
  };

  function health(route) {
    const h = (route && route.health) || {};
    const status = Object.hasOwn(HEALTH, h.status) ? h.status : 'unknown';
    const reasons = Array.isArray(h.reasons) ? h.reasons.map(String) : [];
    return { status, ...HEALTH[status], reasons };
  }

  function count(label, value, attrs) {
    if (value === undefined) return null; // field not served by this gateway version
    const shown = isNum(value) ? value.toLocaleString('en-US') : '?';
    return el('div', { class: 'count ' + ((attrs && attrs.class) || '') },
      el('span', { class: 'count-label' }, label), ' ', el('strong', {}, shown));
  }

  function renderInventory(inventory) {
    const routes = Array.isArray(inventory && inventory.routes) ? inventory.routes : [];
    state.routes = routes;
    state.inventoryLoaded = true;
    const body = $('routes-table').tBodies[0];
    const rows = [];
    const tally = { bad: 0, warn: 0, ok: 0, unknown: 0 };
    for (const route of routes) {
      const h = health(route);
      tally[h.level] += 1;
      const owner = route.owner || {};
      const dest = route.destination || {};
      const dead = route.dead_letters;
      rows.push(el('tr', { class: 'health-' + h.level, dataset: { route: route.name, health: h.status } },
        el('td', { class: 'health' },
          el('span', { class: 'badge ' + h.level }, el('span', { 'aria-hidden': 'true' }, h.mark), ' ', h.label),
          h.reasons.length ? el('ul', { class: 'reasons' }, h.reasons.map((r) => el('li', {}, r))) : null),
        el('td', { class: 'route' },
          el('div', { class: 'name' }, route.name),
          route.description ? el('div', { class: 'desc' }, route.description) : null,
          route.on_failure ? el('div', { class: 'on-failure' }, el('span', { class: 'k' }, 'If it fails: '), route.on_failure) : null,
          route.ordered ? el('div', { class: 'meta' }, `ordered per key · on dead letter: ${route.on_dead_letter}`) : null,
          blockedKeys(route.keys),
          el('div', { class: 'meta' }, 'source ', el('code', {}, route.source ?? '?'),
            route.scheme ? [' · scheme ', el('code', {}, route.scheme)] : null),
          pausedNote(route.paused),
          'paused' in route ? el('div', { class: 'flow-actions' }, route.paused
            ? el('button', { type: 'button', class: 'small primary', onclick: () => askResume(route) }, 'Resume…')
            : el('button', { type: 'button', class: 'small warn', onclick: () => askPause(route) }, 'Pause…')) : null),
        el('td', { class: 'owner' },
          el('div', { class: 'team' }, owner.team || owner.id || '—'),
          owner.contact ? el('div', { class: 'contact' }, contact(owner.contact)) : null,
          owner.runbook ? el('div', {}, link(owner.runbook, 'Runbook')) : null),
        el('td', { class: 'destination' },
          el('code', { class: 'url' }, dest.url ?? '—'),
          dest.timeout ? el('div', { class: 'meta' }, `timeout ${dest.timeout}`) : null,
          dest.rate_limit ? el('div', { class: 'meta rate' }, `rate limit ${dest.rate_limit}` +
            (isNum(dest.rate_burst) ? ` (burst ${dest.rate_burst})` : '')) : null,
          route.retry && isNum(route.retry.max_attempts)
            ? el('div', { class: 'meta' }, `up to ${plural(route.retry.max_attempts, 'attempt')}`) : null,
          route.breaker ? el('div', { class: 'breaker breaker-' + route.breaker },
            'breaker ', String(route.breaker).replace('_', '-')) : null),
        el('td', { class: 'traffic' },
          count('received', route.received),
          count('delivered', route.delivered),
          count('retrying', route.retrying, { class: isNum(route.retrying) && route.retrying > 0 ? 'warn' : '' }),
          count('held', route.held, { class: isNum(route.held) && route.held > 0 ? 'warn' : '' }),
          route.keys ? count('keys waiting', route.keys.active) : null,
          route.keys && route.keys.blocked_count > 0
            ? count('keys blocked', route.keys.blocked_count, { class: 'bad' }) : null,
          isNum(route.lag_seconds) ? el('div', { class: 'count lag ' + (route.lagging ? 'warn' : ''), title: route.max_lag ? `max_lag ${route.max_lag}` : 'the oldest waiting event' },
            el('span', { class: 'count-label' }, route.lagging ? 'lagging' : 'oldest waiting'), ' ',
            el('strong', {}, seconds(route.lag_seconds))) : null,
          count('dead letters', dead, { class: isNum(dead) && dead > 0 ? 'bad' : '' }),
          isNum(dead) && dead > 0
            ? el('button', { type: 'button', class: 'small', onclick: () => showRouteDeadLetters(route.name) },
              'Show dead letters') : null),
        el('td', { class: 'activity' },
          'last_success_at' in route ? el('div', { class: 'when' }, el('div', { class: 'k' }, 'Last success'),
            timeNode(route.last_success_at, 'never')) : null,
          'last_failure_at' in route ? el('div', { class: 'when' }, el('div', { class: 'k' }, 'Last failure'),
            timeNode(route.last_failure_at, 'never')) : null,
          route.expect_within ? el('div', { class: 'meta' }, `expects an event every ${route.expect_within}`) : null,
          !('last_success_at' in route) && !('last_failure_at' in route) && !route.expect_within
            ? el('span', { class: 'muted' }, '—') : null)));
    }
    body.replaceChildren(...rows);
    $('routes-empty').hidden = routes.length > 0;

    const parts = [];
    if (tally.bad) parts.push(`${tally.bad} failing`);
    if (tally.warn) parts.push(`${tally.warn} warning`);
    if (tally.unknown) parts.push(`${tally.unknown} unknown`);
    const summary = $('summary');
    summary.className = 'summary ' + (tally.bad ? 'bad' : tally.warn ? 'warn' : tally.unknown ? 'unknown' : 'ok');
    summary.textContent = routes.length === 0 ? 'No routes'
      : parts.length ? `${parts.join(' · ')} of ${plural(routes.length, 'route')}`
        : `All ${plural(routes.length, 'route')} OK`;
    document.title = (tally.bad ? `(${tally.bad} failing) ` : '') + 'Switchyard';
    $('updated').textContent = 'Updated ' + localTime(new Date().toISOString()).slice(11);
    fillFilterOptions();
  }

  /** An ordered route's keys blocked by a dead letter, each with a way to it. */
  function blockedKeys(keys) {
    const blocked = keys && Array.isArray(keys.blocked) ? keys.blocked : [];
    if (!blocked.length) return null;
    return el('div', { class: 'blocked-keys' },
      el('div', { class: 'k' }, 'Blocked keys (replay or delete the dead letter):'),
      el('ul', {}, blocked.map((b) => el('li', {}, el('code', {}, String(b.key ?? '?')), ' ',
        el('button', { type: 'button', class: 'small', onclick: () => openDetail(String(b.dead_letter)) }, 'Dead letter')))));
  }

  // ---- pause and resume -----------------------------------------------------------

  function pausedNote(pause) {
    if (!pause) return null;
    return el('div', { class: 'paused' },
      el('strong', {}, 'Paused'), ` by ${pause.by ?? '?'} `, timeNode(pause.since),
      el('div', { class: 'paused-reason' }, el('span', { class: 'k' }, 'Why: '), pause.reason ?? ''));
  }

  function hideFlow() {
    state.flowGeneration += 1;
    const panel = $('flow');
    clear(panel);
    panel.hidden = true;
  }

  function flowPanel(level, title, explanation, input, submitLabel, submit) {
    hideError();
    hideFlow();
    const generation = state.flowGeneration;
    const panel = $('flow');
    const form = el('form', { class: 'flow-form' },
      el('p', { class: 'big' }, title),
      el('p', {}, explanation),
      input,
      el('div', { class: 'flow-buttons' },
        el('button', { type: 'submit', class: level === 'warn' ? 'warn' : 'primary' }, submitLabel),
        el('button', { type: 'button', onclick: hideFlow }, 'Cancel')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const result = await busy(form.querySelector('button[type=submit]'), 'Sending…', submit);
      if (generation !== state.flowGeneration) return;
      if (result && result.ok) {
        hideFlow();
        refreshInventory();
      }
    });
    panel.className = 'confirm ' + level;
    panel.replaceChildren(form);
    panel.hidden = false;
    const field = form.querySelector('input');
    if (field) field.focus();
  }

  function textField(id, label, attrs) {
    return el('label', { class: 'field', for: id }, el('span', { class: 'k' }, label),
      el('input', { id, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs }));
  }

  function askPause(route) {
    const name = route.name;
    flowPanel('warn', `Pause ${name}?`,
      'Its events are still accepted and kept in Redis, but nothing is sent to ' +
      `${(route.destination && route.destination.url) || 'its destination'} until it is resumed. ` +
      'Nothing is dead-lettered for being paused.',
      textField('flow-reason', 'Reason (shown in the inventory and the audit log)',
        { required: true, maxlength: 500, placeholder: 'e.g. billing-service maintenance until 14:00' }),
      `Pause ${name}`,
      async () => {
        const reason = $('flow-reason').value.trim();
        const result = await attempt(`Pausing ${name}`,
          () => api('POST', `admin/routes/${encodeURIComponent(name)}/pause`, { reason }));
        if (result.ok) notify(`Paused ${name}: its events are held until it is resumed.`);
        return result;
      });
  }

  function askResume(route) {
    const name = route.name;
    const held = isNum(route.held) ? route.held : 0;
    const limit = route.destination && route.destination.rate_limit;
    flowPanel('info', `Resume ${name}?`,
      `${plural(held, 'held event')} will be delivered in the order they were accepted, at the rate ` +
      `given here, else ${limit ? `the destination's rate limit (${limit})` : 'as fast as the destination takes them'}.`,
      textField('flow-rate', 'Drain rate (optional, like 50/s or 3000/min)', { placeholder: limit || 'as fast as it takes them' }),
      `Resume ${name}`,
      async () => {
        const rate = $('flow-rate').value.trim();
        const result = await attempt(`Resuming ${name}`,
          () => api('POST', `admin/routes/${encodeURIComponent(name)}/resume`, rate ? { rate } : {}));
        if (result.ok) {
          const answer = result.value || {};
          const n = isNum(answer.held) ? answer.held : held;
          notify(`Resumed ${name}: ${plural(n, 'held event')} draining` + (answer.rate ? ` at ${answer.rate}.` : '.'));
        }
        return result;
      });
  }

  // ---- filters -----------------------------------------------------------------

  function setOptions(select, placeholder, options, current) {
    const values = new Set(options.map((o) => o.value));
    const list = options.slice();
    if (current && !values.has(current)) {
      list.push({ value: current, label: state.inventoryLoaded ? `${current} (not configured)` : current });
    }
    // Rebuilt only when the choices change, so a refresh does not close a
    // select the user is working with.
    const signature = JSON.stringify([placeholder, list]);
    if (select.dataset.signature !== signature) {
      select.replaceChildren(el('option', { value: '' }, placeholder),
        ...list.map((o) => el('option', { value: o.value }, o.label)));
      select.dataset.signature = signature;
    }
    select.value = current || '';
  }

  function fillFilterOptions() {
    const routes = state.routes;
    const uniq = (pairs) => [...new Map(pairs).entries()]
      .map(([value, label]) => ({ value, label }))
      .sort((a, b) => a.label.localeCompare(b.label));
    setOptions($('filter-route'), 'All routes',
      uniq(routes.map((r) => [r.name, r.name])), state.filter.route);
    setOptions($('filter-owner'), 'All owners',
      uniq(routes.filter((r) => r.owner && r.owner.id).map((r) => [r.owner.id, r.owner.team ? `${r.owner.team} (${r.owner.id})` : r.owner.id])),
      state.filter.owner);
    setOptions($('filter-source'), 'All sources',
      uniq(routes.filter((r) => r.source).map((r) => [r.source, r.source])), state.filter.source);
    setOptions($('filter-reason'), 'Any reason',
      REASONS.map((r) => ({ value: r, label: r })), state.filter.reason);
  }

  function filterFromUrl() {
    const params = new URLSearchParams(location.search);
    for (const key of FILTER_KEYS) state.filter[key] = params.get(key) || '';
  }

  function applyFilter(filter) {
    state.filter = { ...state.filter, ...filter };
    const params = new URLSearchParams(location.search);
    for (const key of FILTER_KEYS) {
      if (state.filter[key]) params.set(key, state.filter[key]);
      else params.delete(key);
    }
    const search = params.toString();
    history.replaceState(null, '', location.pathname + (search ? '?' + search : '') + location.hash);
    hideBulk();
    fillFilterOptions();
    loadDeadLetters(false);
  }

  function describeFilter(filter) {
    const parts = FILTER_KEYS.filter((k) => filter[k]).map((k) => `${k} = ${filter[k]}`);
    return parts.length ? parts.join(', ') : 'no filter';
  }

  function showRouteDeadLetters(name) {
    applyFilter({ route: name, owner: '', source: '', reason: '' });
    $('dead-letters').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  // ---- dead-letter list ---------------------------------------------------------

  async function loadDeadLetters(more) {
    const generation = more ? state.listGeneration : ++state.listGeneration;
    const status = $('dl-status');
    if (!more) status.textContent = 'Loading dead letters…';
    $('load-more').disabled = true;
    const params = { ...state.filter, limit: PAGE_SIZE, cursor: more ? state.nextCursor : null };
    const result = await attempt('Loading dead letters', () => api('GET', 'admin/dead-letters' + query(params)));
    if (generation !== state.listGeneration) return; // the filter changed meanwhile
    $('load-more').disabled = false;
    if (!result.ok) {
      if (!more) status.textContent = 'Dead letters could not be loaded (see the error above).';
      return;
    }
    const page = result.value || {};
    const items = Array.isArray(page.items) ? page.items : [];
    state.items = more ? state.items.concat(items) : items;
    state.nextCursor = page.next_cursor || null;
    renderDeadLetters();
  }

  function renderDeadLetters() {
    const body = $('dl-table').tBodies[0];
    body.replaceChildren(...state.items.map(deadLetterRow));
    $('load-more').hidden = !state.nextCursor;
    updateListStatus();
  }

  function updateListStatus() {
    const n = state.items.length;
    const empty = n === 0 && !state.nextCursor;
    $('dl-table').hidden = n === 0;
    $('bulk-start').disabled = empty;
    const filtered = FILTER_KEYS.some((k) => state.filter[k]);
    let text;
    if (empty) {
      text = filtered ? `No dead letters match ${describeFilter(state.filter)}.` : 'No dead letters. Nothing is waiting for a replay.';
    } else {
      text = `Showing ${plural(n, 'dead letter')}${state.nextCursor ? ' (more below: Load more)' : ''}, newest first` +
        (filtered ? `, matching ${describeFilter(state.filter)}.` : '.');
    }
    $('dl-status').textContent = text;
  }

  function deadLetterRow(item) {
    const owner = item.owner || {};
    const row = el('tr', { dataset: { id: item.id }, class: item.id === state.detailId ? 'selected' : '' },
      el('td', { class: 'when' }, timeNode(item.failed_at)),
      el('td', { class: 'route' }, el('span', { class: 'name' }, item.route ?? '?')),
      el('td', { class: 'team' }, owner.team || owner.id || '—'),
      el('td', {}, el('span', { class: 'reason reason-' + item.reason }, item.reason ?? '?')),
      el('td', { class: 'num' }, isNum(item.status) ? String(item.status) : '—'),
      el('td', { class: 'num' }, isNum(item.attempts) ? String(item.attempts) : '—'),
      el('td', { class: 'actions' }));
    renderRowActions(row, item);
    return row;
  }

  function renderRowActions(row, item) {
    const cell = row.querySelector('td.actions');
    cell.replaceChildren(
      el('button', { type: 'button', onclick: () => openDetail(item.id) }, 'Details'),
      el('button', { type: 'button', class: 'primary', onclick: (e) => replayOne(item.id, e.currentTarget) }, 'Replay'),
      el('button', { type: 'button', class: 'danger', onclick: () => confirmDeleteInRow(row, item) }, 'Delete'));
  }

  function confirmDeleteInRow(row, item) {
    const cell = row.querySelector('td.actions');
    cell.replaceChildren(
      el('span', { class: 'ask' }, 'Delete for good?'),
      el('button', { type: 'button', class: 'danger', onclick: (e) => deleteOne(item.id, e.currentTarget) }, 'Yes, delete'),
      el('button', { type: 'button', onclick: () => renderRowActions(row, item) }, 'Keep'));
    cell.querySelector('button').focus();
  }

  function rowOf(id) {
    for (const row of $('dl-table').tBodies[0].rows) if (row.dataset.id === id) return row;
    return null;
  }

  function removeDeadLetter(id) {
    state.items = state.items.filter((i) => i.id !== id);
    const row = rowOf(id);
    if (row) row.remove();
    if (state.detailId === id) closeDetail();
    updateListStatus();
  }

  async function busy(button, text, call) {
    const buttons = button ? [...button.parentElement.querySelectorAll('button')] : [];
    const label = button ? button.textContent : '';
    buttons.forEach((b) => { b.disabled = true; });
    if (button) button.textContent = text;
    try {
      return await call();
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      if (button && button.isConnected) button.textContent = label;
    }
  }

  async function replayOne(id, button) {
    hideError();
    const result = await busy(button, 'Replaying…',
      () => attempt(`Replay of ${id}`, () => api('POST', `admin/dead-letters/${encodeURIComponent(id)}/replay`)));
    if (!result.ok) return;
    removeDeadLetter(id);
    notify(`Replayed ${id}: it is back in the delivery queue.`);
    refreshInventory();
  }

  async function deleteOne(id, button) {
    hideError();
    const result = await busy(button, 'Deleting…',
      () => attempt(`Delete of ${id}`, () => api('DELETE', `admin/dead-letters/${encodeURIComponent(id)}`)));
    if (!result.ok) return;
    removeDeadLetter(id);
    notify(`Deleted ${id}.`);
    refreshInventory();
  }

  // ---- bulk replay ---------------------------------------------------------------

  function hideBulk() {
    state.bulkGeneration += 1;
    const panel = $('bulk');
    clear(panel);
    panel.hidden = true;
    panel.className = 'confirm';
  }

  function bulkPanel(level, ...children) {
    const panel = $('bulk');
    panel.className = 'confirm ' + level;
    panel.replaceChildren(...children.flat(Infinity).filter(Boolean));
    panel.hidden = false;
    const first = panel.querySelector('button');
    if (first) first.focus();
  }

  const cancelButton = () => el('button', { type: 'button', onclick: hideBulk }, 'Cancel');

  async function startBulk() {
    hideError();
    hideBulk();
    const generation = state.bulkGeneration;
    const filter = { ...state.filter };
    bulkPanel('info', el('p', {}, `Counting the dead letters that match ${describeFilter(filter)}…`), cancelButton());
    let total = 0;
    const teams = new Set();
    let cursor = null;
    do {
      const params = { ...filter, limit: COUNT_PAGE, cursor };
      const result = await attempt('Counting dead letters', () => api('GET', 'admin/dead-letters' + query(params)));
      if (generation !== state.bulkGeneration) return;
      if (!result.ok) {
        hideBulk();
        return;
      }
      const items = Array.isArray(result.value.items) ? result.value.items : [];
      total += items.length;
      for (const item of items) teams.add((item.owner && (item.owner.team || item.owner.id)) || '?');
      cursor = result.value.next_cursor || null;
    } while (cursor);

    if (total === 0) {
      bulkPanel('info', el('p', {}, `No dead letters match ${describeFilter(filter)}: nothing to replay.`),
        el('button', { type: 'button', onclick: hideBulk }, 'Close'));
      return;
    }
    const teamList = [...teams].sort().join(', ');
    const scoped = Boolean(filter.route || filter.owner || filter.source);
    const what = plural(total, 'dead letter');
    if (scoped) {
      bulkPanel('warn',
        el('p', { class: 'big' }, `Replay ${what}?`),
        el('p', {}, `Matching ${describeFilter(filter)} (team${teams.size === 1 ? '' : 's'}: ${teamList}). ` +
          'They go back to delivery at attempt 1, to each route\'s current destination.'),
        rateField(),
        el('button', { type: 'button', class: 'primary', onclick: () => sendBulk(filter, false, total) }, `Replay ${what}`),
        cancelButton());
      return;
    }
    bulkPanel('warn',
      el('p', { class: 'big' }, `This view names no route, owner or source: ${what} of ${plural(teams.size, 'team')}.`),
      el('p', {}, `Teams: ${teamList}.`),
      el('button', { type: 'button', class: 'warn', onclick: () => confirmAll(filter, total, teamList) }, 'Continue…'),
      cancelButton());
  }

  function confirmAll(filter, total, teamList) {
    bulkPanel('danger',
      el('p', { class: 'big' }, `Replay every team's dead letters (${plural(total, 'dead letter')})?`),
      el('p', {}, `This replays the dead letters of every team (${teamList})` +
        (filter.reason ? ` with reason ${filter.reason}` : '') +
        ', not just yours. Every destination involved will receive them again.'),
      rateField(),
      el('button', { type: 'button', class: 'danger', onclick: () => sendBulk(filter, true, total) },
        'Yes, replay every team\'s dead letters'),
      cancelButton());
  }

  function rateField() {
    return el('p', {}, textField('bulk-rate', 'Pace (optional, like 50/s; default: as fast as the destinations take them)',
      { placeholder: 'as fast as they take them' }));
  }

  async function sendBulk(filter, all, counted) {
    const body = {};
    for (const key of FILTER_KEYS) if (filter[key]) body[key] = filter[key];
    if (all) body.all = true;
    const rate = $('bulk-rate') ? $('bulk-rate').value.trim() : '';
    if (rate) body.rate = rate;
    bulkPanel('info', el('p', {}, `Starting a replay of ${plural(counted, 'dead letter')}…`));
    const result = await attempt('Bulk replay', () => api('POST', 'admin/dead-letters/replay', body));
    hideBulk();
    if (!result.ok) return;
    const answer = result.value || {};
    const skipped = isNum(answer.skipped_unconfigured_routes) ? answer.skipped_unconfigured_routes : 0;
    notify(skipped ? `${skipped} skipped: their route is no longer configured (restore it or delete them).` : '');
    if (typeof answer.replay === 'string') watchReplayJob(answer.replay);
  }

  // ---- replay jobs -----------------------------------------------------------------
  // A bulk replay runs in the gateway, detached from this page: the page only
  // follows its progress, and may leave and come back (a running job is shown
  // again on sign-in).

  function hideReplayJob() {
    if (state.replayTimer) clearTimeout(state.replayTimer);
    state.replayTimer = null;
    state.replayJob = null;
    const panel = $('replay-job');
    clear(panel);
    panel.hidden = true;
  }

  async function showRunningReplay() {
    const result = await attempt('Loading replay jobs', () => api('GET', 'admin/replays' + query({ limit: 20 })));
    if (!result.ok || state.replayJob) return;
    const items = Array.isArray(result.value && result.value.items) ? result.value.items : [];
    const running = items.find((job) => job && job.state === 'running' && typeof job.id === 'string');
    if (running) watchReplayJob(running.id, running);
  }

  function watchReplayJob(id, known) {
    hideReplayJob();
    state.replayJob = id;
    if (known) renderReplayJob(known);
    pollReplayJob(id);
  }

  async function pollReplayJob(id) {
    const result = await attempt(`Following replay job ${id}`, () => api('GET', `admin/replays/${encodeURIComponent(id)}`));
    if (state.replayJob !== id) return;
    if (!result.ok) {
      hideReplayJob();
      return;
    }
    const job = result.value || {};
    renderReplayJob(job);
    if (job.state === 'running') {
      state.replayTimer = setTimeout(() => pollReplayJob(id), PROGRESS_MS);
    } else {
      // Over: what it replayed left the list; the routes' figures moved.
      loadDeadLetters(false);
      refreshInventory();
    }
  }

  function renderReplayJob(job) {
    const num = (v) => (isNum(v) ? v : 0);
    const matched = num(job.matched);
    const done = matched - num(job.remaining);
    const running = job.state === 'running';
    const words = { running: 'running', done: 'done', cancelled: 'cancelled' };
    const stateText = words[job.state] || String(job.state ?? '?');
    const panel = $('replay-job');
    panel.className = 'confirm replay-job ' + (running ? 'info' : job.state === 'done' ? 'ok' : 'warn');
    panel.dataset.state = stateText;
    const counts = [`${num(job.replayed).toLocaleString('en-US')} replayed`];
    if (num(job.gone)) counts.push(`${job.gone} already gone`);
    if (num(job.undecodable)) counts.push(`${job.undecodable} undecodable (still dead letters)`);
    panel.replaceChildren(
      el('p', { class: 'big' }, `Replay job ${job.id ?? ''}: ${stateText}`),
      el('progress', { max: Math.max(matched, 1), value: matched ? done : 1, 'aria-label': 'replay progress' }),
      el('p', { class: 'progress-text' }, `${done.toLocaleString('en-US')} of ${plural(matched, 'dead letter')} handled: ` +
        counts.join(', ') + '.' + (job.rate ? ` Pace ${job.rate}.` : '') +
        (running && job.cancel_requested ? ' Stopping…' : '')),
      el('p', { class: 'meta' }, `Started by ${job.by ?? '?'} `, timeNode(job.started_at),
        job.ended_at ? [' · ended ', timeNode(job.ended_at)] : null,
        job.state === 'cancelled' ? ' · what it did not replay is still a dead letter' : null),
      running
        ? el('button', { type: 'button', class: 'danger', disabled: job.cancel_requested || null, onclick: (e) => cancelReplayJob(job.id, e.currentTarget) }, 'Cancel replay')
        : el('button', { type: 'button', onclick: hideReplayJob }, 'Close'));
    panel.hidden = false;
  }

  async function cancelReplayJob(id, button) {
    const result = await busy(button, 'Cancelling…',
      () => attempt(`Cancelling replay job ${id}`, () => api('DELETE', `admin/replays/${encodeURIComponent(id)}`)));
    if (result.ok && state.replayJob === id) renderReplayJob(result.value || {});
  }

  // ---- detail --------------------------------------------------------------------

  function closeDetail() {
    state.detailId = null;
    const panel = $('detail');
    clear(panel);
    panel.hidden = true;
    for (const row of $('dl-table').tBodies[0].rows) row.classList.remove('selected');
  }

  function field(label, ...value) {
    return [el('dt', {}, label), el('dd', {}, ...value)];
  }

  function bodyView(request) {
    const text = typeof request.body === 'string' ? request.body : '';
    if (request.body_encoding === 'base64') {
      let bytes = null;
      try {
        bytes = atob(text).length;
      } catch {
        bytes = null;
      }
      return [el('p', { class: 'note' }, 'The body is not UTF-8 text, so it is shown as base64' +
        (bytes === null ? '.' : ` (${plural(bytes, 'byte')} once decoded).`) +
        ' Replay sends the original bytes.'), el('pre', { class: 'body' }, text)];
    }
    if (text === '') return [el('p', { class: 'note' }, 'Empty body.')];
    try {
      const pretty = JSON.stringify(JSON.parse(text), null, 2);
      return [el('p', { class: 'note' }, 'JSON, pretty-printed here; replay sends the original bytes.'),
        el('pre', { class: 'body' }, pretty)];
    } catch {
      return [el('pre', { class: 'body' }, text)];
    }
  }

  async function openDetail(id) {
    hideError();
    state.detailId = id;
    for (const row of $('dl-table').tBodies[0].rows) row.classList.toggle('selected', row.dataset.id === id);
    const panel = $('detail');
    panel.replaceChildren(el('h2', { id: 'detail-title' }, 'Dead letter ', el('code', {}, id)), el('p', {}, 'Loading…'));
    panel.hidden = false;
    const result = await attempt(`Loading dead letter ${id}`, () => api('GET', `admin/dead-letters/${encodeURIComponent(id)}`));
    if (state.detailId !== id) return;
    if (!result.ok) {
      if (result.error.status === 404) {
        removeDeadLetter(id);
        notify(`Dead letter ${id} is gone (already replayed or deleted).`);
      } else closeDetail();
      return;
    }
    renderDetail(result.value);
    panel.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderDetail(letter) {
    const owner = letter.owner || {};
    const request = letter.request || null;
    const history = Array.isArray(letter.history) ? letter.history : [];
    const headers = request && Array.isArray(request.headers) ? request.headers : [];
    const reason = letter.reason + (isNum(letter.status) ? ` (HTTP ${letter.status})` : '');
    const actions = el('div', { class: 'detail-actions' },
      el('button', { type: 'button', class: 'primary', onclick: (e) => replayOne(letter.id, e.currentTarget) }, 'Replay'),
      el('button', { type: 'button', class: 'danger', onclick: () => askDelete() }, 'Delete'),
      el('button', { type: 'button', onclick: closeDetail }, 'Close'));
    function askDelete() {
      actions.replaceChildren(
        el('span', { class: 'ask' }, 'Delete this dead letter for good?'),
        el('button', { type: 'button', class: 'danger', onclick: (e) => deleteOne(letter.id, e.currentTarget) }, 'Yes, delete'),
        el('button', { type: 'button', onclick: () => renderDetail(letter) }, 'Keep'));
    }
    const parts = [
      el('div', { class: 'detail-head' },
        el('h2', { id: 'detail-title' }, 'Dead letter ', el('code', {}, letter.id)),
        actions),
      el('dl', { class: 'facts' },
        field('Route', el('strong', {}, letter.route ?? '?'), ' from source ', el('code', {}, letter.source ?? '?')),
        field('Owner', el('strong', {}, owner.team || owner.id || '—'),
          owner.contact ? [' · ', contact(owner.contact)] : null,
          owner.runbook ? [' · ', link(owner.runbook, 'Runbook')] : null),
        field('Destination', el('code', {}, letter.destination ?? '—')),
        field('Reason', el('span', { class: 'reason reason-' + letter.reason }, reason)),
        field('Failed at', timeNode(letter.failed_at)),
        field('Received at', timeNode(letter.received_at)),
        field('Event id', el('code', {}, letter.event_id ?? '—'))),
      el('h3', {}, `Attempts (${history.length})`),
      history.length ? el('table', { class: 'grid attempts' },
        el('thead', {}, el('tr', {}, ['#', 'At', 'Status', 'Error', 'Latency'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, history.map((a, i) => el('tr', {},
          el('td', { class: 'num' }, String(a.attempt ?? i + 1)),
          el('td', {}, timeNode(a.at)),
          el('td', { class: 'num' }, isNum(a.status) ? String(a.status) : '—'),
          el('td', { class: 'error' }, a.error || '—'),
          el('td', { class: 'num' }, isNum(a.latency_ms) ? `${a.latency_ms} ms` : '—')))))
        : el('p', { class: 'note' }, 'No attempts recorded.'),
      el('h3', {}, `Request headers (${headers.length})`),
      headers.length ? el('table', { class: 'grid headers' },
        el('tbody', {}, headers.map((h) => el('tr', {},
          el('th', { scope: 'row' }, Array.isArray(h) ? String(h[0]) : '?'),
          el('td', {}, el('code', {}, Array.isArray(h) ? String(h[1]) : JSON.stringify(h)))))))
        : el('p', { class: 'note' }, request ? 'No headers.' : 'The stored job could not be decoded.'),
      el('h3', {}, 'Body'),
      request ? bodyView(request) : el('p', { class: 'note' }, 'The stored job could not be decoded.'),
    ];
    $('detail').replaceChildren(...parts.flat(Infinity).filter(Boolean));
  }

  // ---- start -------------------------------------------------------------------

  function start() {
    $('tz').textContent = `(${utcOffset()})`;
    filterFromUrl();
    fillFilterOptions();

    $('signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('token');
      const token = input.value.trim();
      input.value = '';
      if (token) signIn(token);
    });
    $('sign-out').addEventListener('click', (event) => {
      event.preventDefault();
      signOut('Signed out. The token was removed from this tab.');
    });
    $('refresh').addEventListener('click', () => {
      hideError();
      refreshInventory();
      loadDeadLetters(false);
    });
    $('banner-close').addEventListener('click', hideError);
    for (const key of FILTER_KEYS) {
      $('filter-' + key).addEventListener('change', (event) => applyFilter({ [key]: event.target.value }));
    }
    $('filters').addEventListener('submit', (event) => event.preventDefault());
    $('filters-clear').addEventListener('click', () => applyFilter({ route: '', owner: '', source: '', reason: '' }));
    $('bulk-start').addEventListener('click', startBulk);
    $('load-more').addEventListener('click', () => loadDeadLetters(true));

    const stored = readStoredToken();
    if (stored) {
      state.token = stored;
      startApp(null);
    } else {
      showSignin(null);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
