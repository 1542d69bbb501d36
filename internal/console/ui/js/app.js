// The console's shell: session, sign-in, navigation between the views.

import * as api from './api.js';
import { h, icon, badge, message, errorText } from './dom.js';
import { Perms } from './perm.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

const views = {
  cluster: () => import('./views/cluster.js'),
  keys: () => import('./views/keys.js'),
  leases: () => import('./views/leases.js'),
  coord: () => import('./views/coord.js'),
  queues: () => import('./views/queues.js'),
  limits: () => import('./views/limits.js'),
};

const state = { perms: null, dispose: null, seq: 0 };

function dispose() {
  if (state.dispose) {
    try {
      state.dispose();
    } catch (err) {
      console.error(err);
    }
    state.dispose = null;
  }
}

// parseQuery splits a query string without decoding its values (keys in
// the address are decoded byte by byte by api.pathToKey).
function parseQuery(q) {
  const out = new Map();
  for (const part of (q || '').split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    out.set(i < 0 ? part : part.slice(0, i), i < 0 ? '' : part.slice(i + 1));
  }
  return out;
}

async function route() {
  if (!state.perms) return;
  const m = (location.hash || '#/cluster').match(/^#\/([a-z]+)(\/[^?]*)?(?:\?(.*))?$/);
  const name = m && views[m[1]] ? m[1] : 'cluster';
  for (const a of nav.querySelectorAll('a')) {
    a.classList.toggle('active', a.dataset.tab === name);
  }
  dispose();
  const seq = ++state.seq;
  let mod;
  try {
    mod = await views[name]();
  } catch (err) {
    main.replaceChildren(message('error', `Could not load the ${name} view: ${errorText(err)}`));
    return;
  }
  if (seq !== state.seq) return;
  const container = h('div', { class: `view view-${name}` });
  main.replaceChildren(container);
  state.dispose =
    mod.mount(container, {
      perms: state.perms,
      path: m && m[2] ? m[2].slice(1) : '',
      query: parseQuery(m && m[3]),
    }) || null;
}

function renderWho() {
  const p = state.perms;
  if (!p.authEnabled) {
    who.replaceChildren(badge('auth disabled', 'muted'));
    return;
  }
  const role = p.root ? badge('root', 'accent') : p.readOnly ? badge('read-only', 'muted') : badge('user');
  who.replaceChildren(
    h('span', { class: 'user', 'data-test': 'user' }, icon('users'), p.user),
    role,
    h(
      'button',
      {
        class: 'btn ghost small',
        type: 'button',
        title: 'Sign out',
        'data-action': 'logout',
        onclick: () => {
          api.setToken(null);
          state.perms = null;
          showLogin('Signed out.');
        },
      },
      icon('logout'),
      'Sign out',
    ),
  );
}

function loginError(err) {
  if (err.status === 429) return 'Too many failed attempts: wait a moment and try again.';
  if (err.status === 400 || err.status === 401) return 'Wrong user name or password.';
  return errorText(err);
}

function showLogin(note) {
  dispose();
  state.perms = null;
  state.seq++;
  nav.hidden = true;
  who.replaceChildren();
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, spellcheck: 'false' });
  const pass = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password' });
  const err = h('div', { class: 'login-error', role: 'alert', 'data-test': 'login-error' });
  const btn = h('button', { id: 'login-submit', class: 'btn primary wide', type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'login-card',
      'data-test': 'login',
      onsubmit: async (e) => {
        e.preventDefault();
        btn.disabled = true;
        err.textContent = '';
        try {
          const r = await api.call('/v3/auth/authenticate', { name: user.value, password: pass.value });
          api.setToken(r.token);
          pass.value = '';
          await refreshSession();
        } catch (e2) {
          err.textContent = loginError(e2);
        } finally {
          btn.disabled = false;
        }
      },
    },
    h('img', { src: 'favicon.svg', alt: '', width: 48, height: 48, class: 'login-logo' }),
    h('h1', {}, 'Sign in to Synod'),
    h('p', { class: 'muted' }, 'Authentication is enabled on this cluster. Sign in with an etcd user.'),
    note ? message('info', note) : null,
    h('label', { for: 'login-user' }, 'User'),
    user,
    h('label', { for: 'login-password' }, 'Password'),
    pass,
    err,
    btn,
    h('p', { class: 'fineprint' }, 'Your session stays in this tab’s memory only: reloading the page signs you out.'),
  );
  main.replaceChildren(h('div', { class: 'login-wrap' }, form));
  user.focus();
}

async function refreshSession() {
  let s;
  try {
    s = await api.get('api/session');
  } catch (err) {
    if (err.status === 401) {
      api.setToken(null);
      showLogin('Your session has ended. Sign in again.');
      return;
    }
    main.replaceChildren(
      message(
        'error',
        `Cannot reach the node: ${errorText(err)} `,
        h('button', { class: 'btn small', type: 'button', onclick: () => refreshSession() }, 'Retry'),
      ),
    );
    return;
  }
  if (s.auth_enabled && !s.user) {
    showLogin();
    return;
  }
  state.perms = new Perms(s);
  nav.hidden = false;
  renderWho();
  await route();
}

api.onUnauthenticated(() => {
  if (!state.perms) return;
  api.setToken(null);
  showLogin('Your session has ended. Sign in again.');
});
window.addEventListener('hashchange', route);
refreshSession();
