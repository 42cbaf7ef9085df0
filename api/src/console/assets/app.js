// Keelson console: a page application over the registry's own /api/v1 and /v2 routes.
//
// Every page is built from DOM nodes with text content (the `h` helper), never from HTML
// strings, so names, tags and descriptions a tenant controls are always shown as text. The one
// exception is a repository's readme, which the server renders from markdown with raw HTML
// escaped and unsafe links removed. Changes carry the session's CSRF token; after a change the
// page is fetched again, so what is shown is what the API now holds.
'use strict';

const state = { session: null };
const PAGE_SIZE = 50;

// --- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function link(href, ...children) {
  return h('a', { href, onclick: (e) => { if (!e.ctrlKey && !e.metaKey && !e.shiftKey) { e.preventDefault(); go(href); } } }, ...children);
}

function table(label, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { 'aria-label': label },
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col', class: x.num ? 'num' : null }, x.label || x)))),
      h('tbody', {}, rows)));
}

function field(label, input) {
  return h('label', {}, label, input);
}

function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}

function when(ms) {
  if (!ms) return '-';
  return new Date(Number(ms)).toISOString().replace(/\.\d+Z$/, 'Z').replace('T', ' ');
}

function short(digest) {
  const [alg, hex] = String(digest || '').split(':');
  return hex ? alg + ':' + hex.slice(0, 12) : String(digest || '');
}

function alertBox(message) {
  return h('p', { role: 'alert', class: 'error' }, message);
}

function notice(message) {
  return h('p', { role: 'status', class: 'notice' }, message);
}

// --- API ----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, detail) { super(message); this.status = status; this.detail = detail; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET' && method !== 'HEAD') headers['X-Keelson-CSRF'] = state.session ? state.session.csrf : '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (path.startsWith('/v2/')) headers.Accept = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json';
  const r = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    const err = data && data.errors && data.errors[0];
    if (r.status === 401 && path !== '/console/api/session') {
      state.session = null;
      go('/console/login?expired=' + encodeURIComponent(err ? err.message : 'signed out'));
    }
    throw new ApiError(r.status, err ? err.message : r.status + ' ' + r.statusText, err ? err.detail : null);
  }
  return { data, headers: r.headers };
}

const get = async (path) => (await api('GET', path)).data;

// Runs a change, then shows the page again with a message (or the error where it happened).
async function change(where, work, done) {
  const out = where.querySelector('.result') || where.appendChild(h('div', { class: 'result' }));
  out.replaceChildren();
  try {
    await work();
    flash = done;
    await render();
  } catch (e) {
    if (e.status !== 401) out.replaceChildren(alertBox(e.message));
  }
}

let flash = null;

// --- Routing ------------------------------------------------------------------------------------

function go(path) {
  if (location.pathname + location.search !== path) history.pushState(null, '', path);
  render();
}

window.addEventListener('popstate', () => render());

const routes = [
  [/^\/console\/login$/, pageLogin],
  [/^\/console\/t\/([a-z0-9-]+)\/?$/, pageTenancy],
  [/^\/console\/t\/([a-z0-9-]+)\/compartments$/, pageCompartments],
  [/^\/console\/t\/([a-z0-9-]+)\/admin$/, pageAdmin],
  [/^\/console\/t\/([a-z0-9-]+)\/tokens$/, pageTokens],
  [/^\/console\/r\/(.+)$/, pageRepo],
  [/^\/console\/i\/(.+)@([a-z0-9]+:[a-f0-9]+)$/, pageImage],
  [/^\/console\/cluster$/, pageCluster],
  [/^\/console\/?$/, pageHome],
];

async function render() {
  const main = document.getElementById('main');
  const path = location.pathname;
  if (!state.session && path !== '/console/login') {
    let ended = null;
    try { state.session = (await api('GET', '/console/api/session')).data; } catch (e) {
      state.session = null;
      if (e.status === 401 && e.message !== 'not signed in') ended = e.message;
    }
    if (!state.session) {
      history.replaceState(null, '', '/console/login' + (ended ? '?expired=' + encodeURIComponent(ended) : ''));
      return render();
    }
  }
  header();
  for (const [re, page] of routes) {
    const m = path.match(re);
    if (!m) continue;
    const message = flash;
    flash = null;
    try {
      const content = await page(...m.slice(1).map(decodeURIComponent));
      main.replaceChildren(...[message ? notice(message) : null, content].filter(Boolean));
    } catch (e) {
      if (e.status === 401) return;
      main.replaceChildren(h('h1', {}, 'Something went wrong'), alertBox(e.message));
    }
    document.title = (main.querySelector('h1') ? main.querySelector('h1').textContent + ' · ' : '') + 'Keelson console';
    return;
  }
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No console page at this address. ', link('/console/', 'Go to the start page.')));
}

function header() {
  const top = document.getElementById('top');
  const s = state.session;
  top.hidden = !s;
  if (!s) return;
  const ns = s.namespace || currentTenancy();
  const items = [];
  if (ns) {
    items.push(['/console/t/' + ns, 'Repositories'], ['/console/t/' + ns + '/compartments', 'Compartments'],
      ['/console/t/' + ns + '/admin', 'Administration'], ['/console/t/' + ns + '/tokens', 'Auth tokens']);
  }
  if (s.cluster_admin) items.push(['/console/cluster', 'Cluster']);
  document.getElementById('nav').replaceChildren(...items.map(([href, label]) => {
    const a = link(href, label);
    if (location.pathname === href) a.setAttribute('aria-current', 'page');
    return a;
  }));
  document.getElementById('who').textContent = s.username + (s.region ? ' · region ' + s.region : '');
}

function currentTenancy() {
  const m = location.pathname.match(/^\/console\/(?:t\/([a-z0-9-]+)|[ri]\/([a-z0-9-]+)\/)/);
  return m ? (m[1] || m[2]) : null;
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('sign-out').addEventListener('click', async () => {
    try { await api('DELETE', '/console/api/session'); } catch (_) { /* signed out either way */ }
    state.session = null;
    go('/console/login?signed_out=1');
  });
  render();
});

// --- Pages --------------------------------------------------------------------------------------

async function pageLogin() {
  const params = new URLSearchParams(location.search);
  const username = h('input', { type: 'text', id: 'username', name: 'username', autocomplete: 'username', required: true, placeholder: 'namespace/user' });
  const token = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true });
  const out = h('div', { class: 'result' });
  if (params.get('expired')) out.append(alertBox('Your session ended (' + params.get('expired') + '). Sign in again.'));
  if (params.get('signed_out')) out.append(notice('You are signed out.'));
  const form = h('form', {
    onsubmit: async (e) => {
      e.preventDefault();
      out.replaceChildren();
      try {
        state.session = (await api('POST', '/console/api/session', { username: username.value.trim(), token: token.value })).data;
        go('/console/');
      } catch (err) {
        out.replaceChildren(alertBox(err.message));
      }
    },
  },
  h('label', { for: 'username' }, 'Username', username),
  h('label', { for: 'token' }, 'Auth token', token),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  return h('section', { class: 'login card' },
    h('h1', {}, 'Sign in to Keelson'),
    h('p', { class: 'muted' }, 'Use the name and auth token you give docker login: ', h('code', {}, '<namespace>/<user>'), '.'),
    out, form);
}

async function pageHome() {
  const s = state.session;
  if (s.namespace) { history.replaceState(null, '', '/console/t/' + s.namespace); return pageTenancy(s.namespace); }
  const ns = h('input', { type: 'text', id: 'open-ns', required: true, pattern: '[a-z0-9-]+' });
  return h('section', {},
    h('h1', {}, 'Keelson'),
    h('p', {}, 'You are the cluster administrator. ', link('/console/cluster', 'Cluster status'), '.'),
    h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); go('/console/t/' + ns.value.trim()); } },
      h('label', { for: 'open-ns' }, 'Open a tenancy (namespace)', ns),
      h('button', { type: 'submit' }, 'Open')));
}

async function pageTenancy(ns) {
  const sum = await get('/api/v1/tenancies/' + ns + '/summary');
  const q = new URLSearchParams(location.search).get('q') || '';
  const repos = sum.repositories.filter((r) => r.name.includes(q));
  const limits = sum.limits || {};
  const usage = sum.usage || {};
  const section = h('section', {});
  const search = h('input', { type: 'search', id: 'repo-search', name: 'q', value: q });
  const quota = limits.max_stored_bytes ? Math.min(100, 100 * usage.stored_bytes / limits.max_stored_bytes) : null;
  const meter = h('div', { class: 'meter', role: 'meter', 'aria-label': 'Storage used', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': quota === null ? 0 : quota.toFixed(0) }, h('div', {}));
  meter.firstChild.style.width = (quota || 0) + '%';
  append(section, [
    h('h1', {}, 'Repositories in ' + ns),
    h('div', { class: 'card' },
      h('dl', { class: 'grid' },
        h('div', {}, h('dt', {}, 'Storage used'), h('dd', { id: 'storage-used' }, bytes(usage.stored_bytes) + (limits.max_stored_bytes ? ' of ' + bytes(limits.max_stored_bytes) : ' (no quota)'))),
        h('div', {}, h('dt', {}, 'Repositories'), h('dd', {}, String(usage.repos) + ' of ' + (limits.max_repos ?? 'unlimited'))),
        h('div', {}, h('dt', {}, 'Images per repository'), h('dd', {}, 'at most ' + (limits.max_images_per_repo ?? 'unlimited')))),
      quota === null ? null : meter),
    h('form', { class: 'inline', role: 'search', onsubmit: (e) => { e.preventDefault(); go('/console/t/' + ns + (search.value ? '?q=' + encodeURIComponent(search.value) : '')); } },
      h('label', { for: 'repo-search' }, 'Search repositories', search), h('button', { type: 'submit' }, 'Search')),
    table('Repositories', ['Repository', { label: 'Images', num: 1 }, { label: 'Size', num: 1 }, 'Last push', { label: 'Pulls', num: 1 }, 'Visibility', 'Compartment'],
      repos.map((r) => h('tr', {},
        h('td', {}, link('/console/r/' + r.name, r.name)),
        h('td', { class: 'num' }, r.images), h('td', { class: 'num' }, bytes(r.stored_bytes)),
        h('td', {}, when(r.last_push_ms)), h('td', { class: 'num pulls' }, r.pulls),
        h('td', {}, h('span', { class: 'badge ' + (r.public ? 'public' : 'private') }, r.public ? 'public' : 'private')),
        h('td', {}, r.compartment || '(root)'))),
      q ? 'No repository matches “' + q + '”.' : 'No repositories yet. Push an image (docker push ' + location.host + '/' + ns + '/<repo>:<tag>) or create one below.'),
  ]);
  if (sum.may_create_repos) section.append(createRepoForm(ns));
  return section;
}

function createRepoForm(ns) {
  const name = h('input', { type: 'text', id: 'new-repo', required: true, placeholder: 'project/app' });
  const compartment = h('input', { type: 'text', id: 'new-repo-compartment', placeholder: '(root)' });
  const pub = h('input', { type: 'checkbox', id: 'new-repo-public' });
  const form = h('form', { class: 'card', 'aria-label': 'Create repository' },
    h('h2', {}, 'Create repository'),
    h('div', { class: 'inline' },
      h('label', { for: 'new-repo' }, 'Repository name (after ' + ns + '/)', name),
      h('label', { for: 'new-repo-compartment' }, 'Compartment', compartment),
      h('label', { class: 'check', for: 'new-repo-public' }, pub, 'Public'),
      h('button', { type: 'submit', class: 'primary' }, 'Create repository')),
    h('div', { class: 'result' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const repo = ns + '/' + name.value.trim().replace(/^\/+/, '');
    change(form, () => api('POST', '/api/v1/repos', { name: repo, public: pub.checked, compartment: compartment.value.trim() || null }),
      'Created ' + repo + '.');
  });
  return form;
}

async function pageCompartments(ns) {
  const sum = await get('/api/v1/tenancies/' + ns + '/summary');
  let compartments = [];
  if (sum.administrator) compartments = (await get('/api/v1/tenancies/' + ns)).compartments;
  const byCompartment = new Map();
  for (const r of sum.repositories) {
    const c = r.compartment || '';
    if (!byCompartment.has(c)) byCompartment.set(c, []);
    byCompartment.get(c).push(r);
  }
  for (const c of byCompartment.keys()) if (c && !compartments.some((x) => x.name === c)) compartments.push({ name: c, parent: null });
  const node = (name, label) => h('li', {},
    h('strong', {}, label),
    h('ul', {},
      (byCompartment.get(name) || []).map((r) => h('li', {}, link('/console/r/' + r.name, r.name), ' ', h('span', { class: 'muted' }, r.images + ' images, ' + bytes(r.stored_bytes)))),
      compartments.filter((c) => (c.parent || '') === name && c.name !== name).map((c) => node(c.name, c.name))));
  return h('section', {},
    h('h1', {}, 'Compartments of ' + ns),
    h('div', { class: 'tree card' }, h('ul', {}, node('', ns + ' (root compartment)'))));
}

async function pageRepo(repo) {
  const params = new URLSearchParams(location.search);
  const last = params.get('last');
  const info = await get('/api/v1/repos/' + repo);
  const page = await api('GET', '/api/v1/repos/' + repo + '/images?n=' + PAGE_SIZE + (last ? '&last=' + encodeURIComponent(last) : ''));
  const images = page.data.images;
  const next = (page.headers.get('Link') || '').match(/last=([^&>]+)/);
  const may = info.may || {};
  const section = h('section', {});
  const firstTag = images.flatMap((i) => i.tags)[0];
  const pullCmd = 'docker pull ' + location.host + '/' + repo + (firstTag ? ':' + firstTag : '@<digest>');
  const copy = h('button', { type: 'button', onclick: () => copyText(pullCmd, copy) }, 'Copy');
  append(section, [
    h('h1', {}, repo),
    h('p', { class: 'description' }, info.description || h('span', { class: 'muted' }, 'No description.')),
    h('div', { class: 'pull' }, h('code', { id: 'pull-command' }, pullCmd), copy),
    h('div', { class: 'card' }, h('dl', { class: 'grid' },
      dd('Visibility', h('span', { class: 'badge ' + (info.public ? 'public' : 'private'), id: 'visibility' }, info.public ? 'public' : 'private')),
      dd('Compartment', info.compartment || '(root)'),
      dd('Images', info.images), dd('Tags', info.tags), dd('Stored', bytes(info.stored_bytes)),
      dd('Last push', when(info.last_push_ms)), dd('Pulls', h('span', { id: 'repo-pulls' }, info.pulls)), dd('Last pull', when(info.last_pull_ms)),
      dd('Retention policy', info.retention_policy || 'global'),
      dd('Immutable tags', info.immutable_tags && info.immutable_tags.enabled ? 'on (exempt: ' + (info.immutable_tags.exempt.join(', ') || '-') + ')' : 'off'),
      dd('Redundancy', typeof info.redundancy === 'string' ? info.redundancy : info.redundancy ? JSON.stringify(info.redundancy) : '-'))),
  ]);
  section.append(h('h2', {}, 'Images'));
  section.append(table('Images', ['Digest', 'Tags', { label: 'Size', num: 1 }, 'Pushed', 'Last pulled', { label: 'Pulls', num: 1 }, 'Platforms', 'Signature', 'Referrers', may.delete ? 'Actions' : null].filter(Boolean),
    images.map((img) => h('tr', { 'data-digest': img.digest },
      h('td', { class: 'mono' }, link('/console/i/' + repo + '@' + img.digest, short(img.digest))),
      h('td', {}, img.tags.length ? img.tags.map((t) => h('span', { class: 'tag' }, t,
        may.delete ? h('button', { type: 'button', 'aria-label': 'Remove tag ' + t, title: 'Remove tag ' + t, onclick: (e) => removeTag(repo, t, e.target.closest('section')) }, '×') : null)) : h('span', { class: 'muted' }, 'untagged')),
      h('td', { class: 'num' }, bytes(img.size)), h('td', {}, when(img.pushed_ms)), h('td', {}, when(img.last_pulled_ms)),
      h('td', { class: 'num pulls' }, img.pulls),
      h('td', {}, (img.platforms || []).join(', ') || '-'),
      h('td', { class: 'signature' }, signatureBadge(img.signature)),
      h('td', {}, img.referrers ? link('/console/i/' + repo + '@' + img.digest, img.referrers + (img.referrers > 1 ? ' referrers' : ' referrer')) : h('span', { class: 'muted' }, 'none')),
      may.delete ? h('td', {}, h('button', { type: 'button', class: 'danger', 'aria-label': 'Delete image ' + short(img.digest), onclick: (e) => deleteImage(repo, img.digest, e.target.closest('section')) }, 'Delete image')) : null)),
    'This repository holds no images yet. Push one: docker push ' + location.host + '/' + repo + ':<tag>'));
  section.append(h('nav', { class: 'pager', 'aria-label': 'Pages of images' },
    last ? link('/console/r/' + repo, 'First page') : null,
    h('span', { class: 'muted' }, page.data.total + (page.data.total === 1 ? ' image' : ' images') + ' in all'),
    next ? link('/console/r/' + repo + '?last=' + next[1], 'Next page') : null));
  if (info.readme_html) {
    const readme = h('div', { class: 'readme', id: 'readme' });
    readme.innerHTML = info.readme_html; // rendered by the server from markdown, raw HTML escaped
    section.append(h('h2', {}, 'Readme'), readme);
  }
  if (may.administer) section.append(repoSettings(repo, info));
  section.append(retentionPreview(repo));
  return section;
}

function dd(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

async function copyText(text, button) {
  try { await navigator.clipboard.writeText(text); button.textContent = 'Copied'; } catch (_) { button.textContent = 'Select and copy'; }
}

function removeTag(repo, tag, where) {
  if (!confirm('Remove tag ' + tag + ' from ' + repo + '? The image stays.')) return;
  change(where, () => api('DELETE', '/api/v1/repos/' + repo + '/tags/' + encodeURIComponent(tag)), 'Removed tag ' + tag + '.');
}

function deleteImage(repo, digest, where) {
  if (!confirm('Delete image ' + short(digest) + ' and all its tags from ' + repo + '?')) return;
  change(where, () => api('DELETE', '/api/v1/repos/' + repo + '/images/' + digest), 'Deleted image ' + short(digest) + '.');
}

function repoSettings(repo, info) {
  const box = h('div', { class: 'card', id: 'repo-settings' }, h('h2', {}, 'Settings'));
  const visibility = h('button', {
    type: 'button', id: 'toggle-visibility',
    onclick: () => change(box, () => api('PATCH', '/api/v1/repos/' + repo, { public: !info.public }), repo + ' is now ' + (info.public ? 'private' : 'public') + '.'),
  }, info.public ? 'Make private' : 'Make public');
  const compartment = h('input', { type: 'text', id: 'move-compartment', value: info.compartment || '' });
  const desc = h('input', { type: 'text', id: 'edit-description', value: info.description || '' });
  const readme = h('textarea', { id: 'edit-readme' });
  readme.value = info.readme || '';
  append(box, [
    h('div', { class: 'actions' }, visibility,
      h('button', {
        type: 'button', class: 'danger', id: 'delete-repo',
        onclick: () => { if (confirm('Delete repository ' + repo + ' and every image in it?')) change(box, async () => { await api('DELETE', '/api/v1/repos/' + repo); history.replaceState(null, '', '/console/t/' + repo.split('/')[0]); }, 'Deleted ' + repo + '.'); },
      }, 'Delete repository')),
    h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); change(box, () => api('PATCH', '/api/v1/repos/' + repo, { compartment: compartment.value.trim() }), 'Moved ' + repo + '.'); } },
      h('label', { for: 'move-compartment' }, 'Compartment (empty: root)', compartment), h('button', { type: 'submit' }, 'Move')),
    h('form', { onsubmit: (e) => { e.preventDefault(); change(box, () => api('PATCH', '/api/v1/repos/' + repo, { description: desc.value, readme: readme.value }), 'Saved the description and readme.'); } },
      h('label', { for: 'edit-description' }, 'Description', desc),
      h('label', { for: 'edit-readme' }, 'Readme (markdown)', readme),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save description and readme'))),
    h('div', { class: 'result' }),
  ]);
  return box;
}

function retentionPreview(repo) {
  const out = h('div', {});
  const box = h('div', { class: 'card' }, h('h2', {}, 'Retention'),
    h('button', {
      type: 'button', id: 'retention-preview',
      onclick: async () => {
        try {
          const p = await get('/api/v1/repos/' + repo + '/retention/preview');
          out.replaceChildren(
            h('p', {}, p.images.length + ' image(s) would go under policy ' + p.policy + ', freeing ' + bytes(p.bytes_freed) + '.'),
            table('Retention preview', ['Digest', 'Tags', 'Rule', { label: 'Frees', num: 1 }],
              p.images.map((i) => h('tr', {}, h('td', { class: 'mono' }, short(i.digest)), h('td', {}, (i.tags || []).join(', ') || '-'), h('td', {}, i.rule || '-'), h('td', { class: 'num' }, bytes(i.bytes_freed ?? i.size)))),
              'Nothing would be deleted now.'));
        } catch (e) { out.replaceChildren(alertBox(e.message)); }
      },
    }, 'Preview what retention would delete'), out);
  return box;
}

// What a signature state means to someone about to run the image.
const SIGNATURE_TEXT = { signed: 'signed', invalid: 'not verified', unsigned: 'unsigned' };
const SEVERITY_ORDER = ['critical', 'high', 'medium', 'low', 'unknown'];

function signatureBadge(state, id) {
  const s = SIGNATURE_TEXT[state] ? state : 'unsigned';
  return h('span', { class: 'badge ' + s, id: id || null }, SIGNATURE_TEXT[s]);
}

function signatureDetail(img) {
  const found = img.signatures || [];
  const verified = [...new Set(found.flatMap((f) => f.verified_by || []))];
  const problems = found.filter((f) => !(f.verified_by || []).length && f.problem).map((f) => f.format + ': ' + f.problem);
  return h('span', {}, signatureBadge(img.signature, 'signature-state'),
    verified.length ? h('span', { id: 'signature-keys' }, ' verified by ' + verified.join(', ')) : null,
    !verified.length && problems.length ? h('span', { class: 'muted', id: 'signature-problem' }, ' ' + problems[0]) : null);
}

// The image's findings: counts by severity and each advisory, with the version that fixes it.
async function vulnerabilityCard(repo, digest) {
  const box = h('div', { class: 'card', id: 'vulnerabilities' }, h('h2', {}, 'Vulnerabilities'));
  let report;
  try { report = await get('/api/v1/repos/' + repo + '/images/' + digest + '/vulnerabilities'); } catch (e) {
    box.append(alertBox(e.message));
    return box;
  }
  if (report.state === 'queued') { box.append(h('p', { id: 'scan-state' }, 'Waiting for its inventory; the scanner has not reached this image yet.')); return box; }
  if (report.state !== 'scanned') { box.append(h('p', { id: 'scan-state', class: 'muted' }, 'Not scanned: not an image with layers, or pushed before scanning was on.')); return box; }
  const counts = {};
  for (const [k, v] of Object.entries(report.counts || {})) counts[k.toLowerCase()] = v;
  const total = report.findings.length;
  box.append(
    h('p', { id: 'scan-state' }, (total ? total + (total === 1 ? ' finding' : ' findings') + ' in ' : 'No known vulnerabilities in ') + report.packages + (report.packages === 1 ? ' package' : ' packages'),
      report.sbom ? h('span', {}, ' (inventory ', link('/console/i/' + repo + '@' + report.sbom, short(report.sbom)), ')') : null),
    h('p', { class: 'severities' }, SEVERITY_ORDER.filter((s) => counts[s]).map((s) => h('span', { class: 'badge sev-' + s, 'data-severity': s }, counts[s] + ' ' + s))),
    table('Vulnerabilities', ['Advisory', 'Severity', 'Package', 'Installed', 'Fixed in', 'Summary'],
      report.findings.map((f) => h('tr', { 'data-advisory': f.id },
        h('td', { class: 'mono' }, f.id), h('td', {}, h('span', { class: 'badge sev-' + String(f.severity).toLowerCase() }, String(f.severity).toLowerCase())),
        h('td', {}, f.package + ' (' + f.ecosystem + ')'), h('td', { class: 'mono' }, f.installed),
        h('td', { class: 'mono' }, f.fixed || 'no fix yet'), h('td', {}, f.summary))),
      'No advisory in the database applies to these packages.'));
  return box;
}

async function pageImage(repo, digest) {
  const img = await get('/api/v1/repos/' + repo + '/images/' + digest);
  const vulnerabilities = await vulnerabilityCard(repo, img.digest);
  return h('section', {},
    h('p', {}, link('/console/r/' + repo, '← ' + repo)),
    h('h1', { class: 'digest' }, repo + '@' + img.digest),
    h('div', { class: 'card' }, h('dl', { class: 'grid' },
      dd('Tags', img.tags.length ? img.tags.map((t) => h('span', { class: 'tag' }, t)) : 'untagged'),
      dd('Media type', img.media_type || '-'), dd('Artifact type', img.artifact_type || '-'),
      dd('Size', bytes(img.size)), dd('Manifest', bytes(img.manifest_bytes)),
      dd('Pushed', when(img.pushed_ms)), dd('Last pulled', when(img.last_pulled_ms)),
      dd('Pulls', h('span', { id: 'image-pulls' }, img.pulls)),
      dd('Platforms', (img.platforms || []).join(', ') || '-'),
      dd('Signature', signatureDetail(img)))),
    vulnerabilities,
    img.config ? h('div', {}, h('h2', {}, 'Config'), h('p', { class: 'mono digest' }, img.config.digest + ' (' + bytes(img.config.size) + ', ' + img.config.media_type + ')')) : null,
    img.layers && img.layers.length ? h('div', {}, h('h2', {}, 'Layers'),
      table('Layers', ['#', 'Digest', 'Media type', { label: 'Size', num: 1 }],
        img.layers.map((l, i) => h('tr', {}, h('td', {}, i + 1), h('td', { class: 'mono digest' }, l.digest), h('td', {}, l.media_type), h('td', { class: 'num' }, bytes(l.size)))), '')) : null,
    img.children && img.children.length ? h('div', {}, h('h2', {}, 'Platforms of this index'),
      table('Platforms', ['Platform', 'Manifest', { label: 'Size', num: 1 }],
        img.children.map((c) => h('tr', {}, h('td', {}, c.platform || '-'), h('td', { class: 'mono' }, link('/console/i/' + repo + '@' + c.digest, short(c.digest))), h('td', { class: 'num' }, bytes(c.size)))), '')) : null,
    h('h2', {}, 'Referrers'),
    table('Referrers', ['Artifact type', 'Digest', { label: 'Size', num: 1 }],
      (img.referrers || []).map((r) => h('tr', {}, h('td', {}, r.artifact_type || r.media_type || '-'), h('td', { class: 'mono' }, link('/console/i/' + repo + '@' + r.digest, short(r.digest))), h('td', { class: 'num' }, bytes(r.size)))),
      'No signatures, SBOMs or other referrers.'));
}

async function pageAdmin(ns) {
  let t;
  try { t = await get('/api/v1/tenancies/' + ns); } catch (e) {
    if (e.status === 403) return h('section', {}, h('h1', {}, 'Administration of ' + ns), alertBox('Only administrators of ' + ns + ' manage its users, groups and policies. ' + e.message));
    throw e;
  }
  const section = h('section', {}, h('h1', {}, 'Administration of ' + ns));
  // Users
  const newUser = h('input', { type: 'text', id: 'new-user', required: true });
  const users = h('div', { class: 'card', id: 'users' }, h('h2', {}, 'Users'),
    table('Users', ['User', 'Auth tokens', 'Actions'], t.users.map((u) => h('tr', {}, h('td', {}, ns + '/' + u),
      h('td', {}, link('/console/t/' + ns + '/tokens?user=' + encodeURIComponent(u), 'Tokens of ' + u)),
      h('td', {}, h('button', { type: 'button', class: 'danger', onclick: () => { if (confirm('Delete user ' + u + '?')) change(users, () => api('DELETE', '/api/v1/tenancies/' + ns + '/users/' + u), 'Deleted user ' + u + '.'); } }, 'Delete user ' + u)))), 'No users.'),
    h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); change(users, () => api('POST', '/api/v1/tenancies/' + ns + '/users', { name: newUser.value.trim() }), 'Created user ' + newUser.value.trim() + '.'); } },
      h('label', { for: 'new-user' }, 'New user name', newUser), h('button', { type: 'submit' }, 'Create user')),
    h('div', { class: 'result' }));
  // Groups
  const groupName = h('input', { type: 'text', id: 'group-name', required: true });
  const memberName = h('input', { type: 'text', id: 'member-name', required: true });
  const groups = Object.entries(t.groups || {});
  const groupsBox = h('div', { class: 'card', id: 'groups' }, h('h2', {}, 'Groups and membership'),
    table('Groups', ['Group', 'Members'], groups.map(([g, members]) => h('tr', {}, h('td', {}, g),
      h('td', {}, (members.members || members || []).map((m) => h('span', { class: 'tag' }, m,
        h('button', { type: 'button', 'aria-label': 'Remove ' + m + ' from ' + g, onclick: () => change(groupsBox, () => api('DELETE', '/api/v1/tenancies/' + ns + '/groups/' + g + '/members/' + m), 'Removed ' + m + ' from ' + g + '.') }, '×')))))), 'No groups.'),
    h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); const g = groupName.value.trim(); const m = memberName.value.trim(); change(groupsBox, async () => { if (!groups.some(([x]) => x === g)) await api('POST', '/api/v1/tenancies/' + ns + '/groups', { name: g }); await api('PUT', '/api/v1/tenancies/' + ns + '/groups/' + g + '/members/' + m); }, 'Added ' + m + ' to ' + g + '.'); } },
      h('label', { for: 'group-name' }, 'Group (created if new)', groupName), h('label', { for: 'member-name' }, 'User', memberName), h('button', { type: 'submit' }, 'Add to group')),
    h('div', { class: 'result' }));
  // Policies
  const policiesBox = h('div', { class: 'card', id: 'policies' }, h('h2', {}, 'Policies'),
    h('p', { class: 'muted' }, 'One statement per line, e.g. ', h('code', {}, 'allow group Developers to use repos in compartment dev'), '.'));
  for (const p of t.policies) policiesBox.append(policyEditor(ns, p.name, p.statements, p.compartment));
  policiesBox.append(policyEditor(ns, null, [], null));
  append(section, [users, groupsBox, policiesBox, await auditBox(ns)]);
  return section;
}

function policyEditor(ns, name, statements, compartment) {
  const id = 'policy-' + (name || 'new');
  const nameInput = name ? null : h('input', { type: 'text', id: id + '-name', required: true });
  const text = h('textarea', { id: id + '-text', spellcheck: 'false', 'aria-describedby': id + '-check' });
  text.value = statements.join('\n');
  const check = h('div', { id: id + '-check', 'aria-live': 'polite' });
  const lines = () => text.value.split('\n').map((l) => l.trim()).filter((l) => l);
  const show = (e) => {
    const d = e.detail || {};
    check.replaceChildren(alertBox(d.line ? 'Line ' + d.line + ', column ' + d.column + ': expected ' + d.expected + ', found ' + (d.found || 'end of statement') : e.message));
  };
  let timer = null;
  text.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try { await api('POST', '/api/v1/tenancies/' + ns + '/policy-check', { statements: lines() }); check.replaceChildren(h('p', { class: 'muted' }, 'The statements parse.')); } catch (e) { if (e.status !== 401) show(e); }
    }, 250);
  });
  const box = h('form', {
    class: 'policy', 'aria-label': name ? 'Policy ' + name : 'New policy',
    onsubmit: async (e) => {
      e.preventDefault();
      const policy = name || nameInput.value.trim();
      try {
        await api('POST', '/api/v1/tenancies/' + ns + '/policy-check', { statements: lines() });
      } catch (err) { if (err.status !== 401) show(err); return; }
      change(box, () => api('PUT', '/api/v1/tenancies/' + ns + '/policies/' + policy, { statements: lines(), compartment }), 'Saved policy ' + policy + '.');
    },
  },
  h('h3', {}, name ? 'Policy ' + name + (compartment ? ' (compartment ' + compartment + ')' : '') : 'New policy'),
  nameInput ? h('label', { for: id + '-name' }, 'Policy name', nameInput) : null,
  h('label', { for: id + '-text' }, 'Policy statements', text), check,
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, name ? 'Save policy ' + name : 'Create policy'),
    name ? h('button', { type: 'button', class: 'danger', onclick: () => { if (confirm('Delete policy ' + name + '?')) change(box, () => api('DELETE', '/api/v1/tenancies/' + ns + '/policies/' + name), 'Deleted policy ' + name + '.'); } }, 'Delete policy ' + name) : null),
  h('div', { class: 'result' }));
  return box;
}

// The newest audit records of a tenancy (or, for the cluster administrator, of no tenancy).
async function auditBox(ns) {
  const query = new URLSearchParams(location.search);
  const failed = query.get('failed') === 'true';
  const page = await get('/api/v1/audit?n=50' + (ns ? '&namespace=' + ns : '') + (failed ? '&failed=true' : ''));
  const here = location.pathname;
  return h('div', { class: 'card', id: 'audit' }, h('h2', {}, 'Audit log'),
    h('p', {}, failed ? link(here, 'Show every record') : link(here + '?failed=true', 'Show only refusals and failed logins')),
    table('Audit log', ['Time', 'Actor', 'Action', { label: 'Status', num: 1 }, 'Source', 'Node', 'Target'],
      page.events.map((e) => h('tr', {}, h('td', {}, when(e.time_ms)), h('td', {}, e.actor), h('td', { class: 'mono' }, e.action),
        h('td', { class: 'num' }, e.status), h('td', {}, e.source || '-'), h('td', {}, e.node), h('td', { class: 'mono digest' }, e.target))),
      'No records yet.'),
    page.next ? h('p', { class: 'muted' }, 'Older records: keelson audit' + (ns ? ' --namespace ' + ns : '') + ' --after ' + page.next) : null);
}

async function pageTokens(ns) {
  const s = state.session;
  const params = new URLSearchParams(location.search);
  const user = params.get('user') || (s.namespace === ns ? s.user : null);
  if (!user) return h('section', {}, h('h1', {}, 'Auth tokens'), h('p', {}, 'Choose a user on the ', link('/console/t/' + ns + '/admin', 'administration page'), '.'));
  const tokens = (await get('/api/v1/tenancies/' + ns + '/users/' + user + '/tokens')).tokens;
  const description = h('input', { type: 'text', id: 'token-description', placeholder: 'CI pipeline' });
  const section = h('section', {}, h('h1', {}, 'Auth tokens of ' + ns + '/' + user));
  const fresh = h('div', { id: 'new-token-box' });
  append(section, [
    h('p', { class: 'muted' }, 'An auth token is the password of docker login ' + location.host + ' -u ' + ns + '/' + user + '. It is shown once.'),
    fresh,
    table('Auth tokens', ['Id', 'Description', 'Created', 'Last used', 'Actions'],
      tokens.map((t) => h('tr', {}, h('td', { class: 'mono' }, t.id), h('td', {}, t.description || '-'), h('td', {}, when(t.created_ms)), h('td', {}, when(t.last_used_ms)),
        h('td', {}, h('button', { type: 'button', class: 'danger', onclick: () => { if (confirm('Revoke token ' + t.id + '? Clients using it stop working.')) change(section, () => api('DELETE', '/api/v1/tenancies/' + ns + '/users/' + user + '/tokens/' + t.id), 'Revoked token ' + t.id + '.'); } }, 'Revoke ' + t.id)))),
      'No auth tokens.'),
    h('form', {
      class: 'inline', onsubmit: async (e) => {
        e.preventDefault();
        try {
          const made = (await api('POST', '/api/v1/tenancies/' + ns + '/users/' + user + '/tokens', { description: description.value })).data;
          flash = 'Created token ' + made.id + '.';
          await render();
          const code = h('code', { id: 'new-token' }, made.token);
          const copy = h('button', { type: 'button', onclick: () => copyText(made.token, copy) }, 'Copy token');
          document.getElementById('new-token-box').replaceChildren(h('div', { class: 'secret', role: 'status' },
            h('p', {}, 'Your new auth token (it will not be shown again):'), h('p', { class: 'pull' }, code, copy)));
        } catch (err) { if (err.status !== 401) section.querySelector('.result').replaceChildren(alertBox(err.message)); }
      },
    }, h('label', { for: 'token-description' }, 'Description', description), h('button', { type: 'submit', class: 'primary' }, 'Create token')),
    h('div', { class: 'result' }),
  ]);
  return section;
}

async function pageCluster() {
  const st = await get('/api/v1/cluster/status');
  let regions = null, replication = null;
  try { regions = await get('/api/v1/regions'); } catch (_) { regions = null; }
  try { replication = await get('/api/v1/replication/status'); } catch (_) { replication = null; }
  const members = st.members || [];
  const role = (m) => (m.id === st.leader ? 'leader' : m.voter ? 'voter' : 'learner');
  const jobs = Object.entries(st.blob_jobs || {});
  return h('section', {},
    h('h1', {}, 'Cluster'),
    h('div', { class: 'card' }, h('dl', { class: 'grid' },
      dd('Leader', st.leader ?? 'none'), dd('Term', st.term ?? '-'), dd('Last log', st.last_log_index ?? '-'),
      dd('Committed', st.committed_index ?? '-'), dd('Applied', st.applied_index ?? '-'),
      dd('Snapshot', st.snapshot_index ?? '-'),
      dd('Region', st.region || '(unnamed)'), dd('Identity from', st.home_region || st.region || 'this region'),
      dd('Under-replicated blobs', st.under_replicated ?? 'not yet counted'),
      dd('Bytes to move', st.bytes_to_move === null || st.bytes_to_move === undefined ? 'not yet counted' : bytes(st.bytes_to_move)))),
    h('h2', {}, 'Members'),
    table('Members', ['Id', 'Role', 'API', 'Peer', 'Fault domain', { label: 'Lag', num: 1 }, { label: 'Free space', num: 1 }],
      members.map((m) => h('tr', {}, h('td', {}, m.id), h('td', {}, role(m)), h('td', {}, m.api_addr || '-'), h('td', {}, m.peer_addr || '-'),
        h('td', {}, m.fault_domain || '-'), h('td', { class: 'num' }, m.lag ?? '-'),
        h('td', { class: 'num' }, m.capacity_bytes ? bytes(m.free_bytes) + ' of ' + bytes(m.capacity_bytes) : '-'))),
      'No members.'),
    h('h2', {}, 'Repair, scrub, rebalance and garbage collection'),
    table('Blob jobs', ['Counter', { label: 'Value', num: 1 }],
      jobs.map(([k, v]) => h('tr', {}, h('td', { class: 'mono' }, k), h('td', { class: 'num' }, typeof v === 'object' ? JSON.stringify(v) : String(v)))),
      'No blob job has reported yet.'),
    regions ? h('div', {}, h('h2', {}, 'Regions'),
      h('p', {}, 'This region: ', h('strong', {}, regions.name || '(unnamed)'), ', identity from ', regions.home || regions.name || '-', '.'),
      table('Peer regions', ['Region', 'URL', 'As'], (regions.peers || []).map((p) => h('tr', {}, h('td', {}, p.name || p.region), h('td', {}, p.url), h('td', {}, p.username || '-'))), 'No peer regions.')) : null,
    replication ? h('div', {}, h('h2', {}, 'Replication'),
      table('Replication', ['Rule', 'Target', { label: 'Pending', num: 1 }, { label: 'Pending bytes', num: 1 }, 'Lag', { label: 'Sent', num: 1 }, 'Last error'],
        (replication.targets || []).map((r) => h('tr', {}, h('td', { class: 'mono' }, r.rule), h('td', {}, r.target), h('td', { class: 'num' }, r.pending_images), h('td', { class: 'num' }, bytes(r.pending_bytes)),
          h('td', {}, r.lag_ms !== undefined && r.lag_ms !== null ? (r.lag_ms / 1000).toFixed(1) + ' s' : '-'), h('td', { class: 'num' }, bytes(r.bytes_sent)), h('td', {}, r.last_error || '-'))),
        'No replication rules.')) : null,
    await auditBox(null));
}
