// Building the page: elements from code (no HTML strings, so no markup
// injection from keys or values), icons, formatting, dialogs.

const SVG = 'http://www.w3.org/2000/svg';

// h creates an element: h('div', {class: 'x', onclick: f}, child, ...).
// Children are nodes, strings (as text), arrays, or null (skipped). A tag
// 'svg:path' is created in the SVG namespace.
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' && !svg) {
      el.value = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

// set replaces el's children as h() takes them (null skipped).
export function set(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const icons = {
  folder: 'M3 6.5A1.5 1.5 0 0 1 4.5 5h4l2 2h9A1.5 1.5 0 0 1 21 8.5v9a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z',
  key: 'M14.5 4a5.5 5.5 0 0 0-5.2 7.3L3 17.6V21h3.4l.9-.9v-2h2v-2h2l1.2-1.2A5.5 5.5 0 1 0 14.5 4zm1.8 5.2a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3z',
  refresh: 'M19 8a8 8 0 1 0 1 6h-2.2A6 6 0 1 1 17 9.4L14 12h7V5z',
  plus: 'M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z',
  trash: 'M9 3h6l1 2h4v2H4V5h4zm-3 6h12l-1 12H7z',
  edit: 'M4 17.3V20h2.7l8-8-2.7-2.7zM17.7 9 15 6.3l1.6-1.6a1 1 0 0 1 1.4 0l1.3 1.3a1 1 0 0 1 0 1.4z',
  pause: 'M7 5h4v14H7zm6 0h4v14h-4z',
  play: 'M8 5v14l11-7z',
  lock: 'M7 10V7a5 5 0 0 1 10 0v3h1a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1zm2 0h6V7a3 3 0 0 0-6 0z',
  crown: 'M3 7l4.5 4L12 4l4.5 7L21 7l-2 11H5z',
  users: 'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm7 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM1 20c0-3.9 3.6-6 8-6s8 2.1 8 6zm17 0c0-2.2-.8-3.9-2.2-5.1 3.4.3 6.2 2 6.2 5.1z',
  clock: 'M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm1 4v5.4l3.6 2.2-1 1.6L11 13.5V7z',
  logout: 'M10 3h9a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2h-9v-2h9V5h-9zm-.6 5.6L6.8 11H15v2H6.8l2.6 2.4L8 16.8 3.2 12 8 7.2z',
  up: 'M12 4l7 7h-5v9h-4v-9H5z',
  queue: 'M4 5h16v3H4zm0 5.5h16v3H4zM4 16h10v3H4z',
  gauge: 'M12 5a9 9 0 0 0-7.8 13.5l1.7-1A7 7 0 1 1 19 14a7 7 0 0 1-.9 3.5l1.7 1A9 9 0 0 0 12 5zm4.6 3.3-5.3 4.4a1.9 1.9 0 1 0 2.6 2.6z',
  ban: 'M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 2a7 7 0 0 1 5.6 11.2L7.8 6.4A7 7 0 0 1 12 5zm-5.6 2.8 9.8 9.8A7 7 0 0 1 6.4 7.8z',
  search: 'M10 3a7 7 0 0 1 5.6 11.2l5.1 5.1-1.4 1.4-5.1-5.1A7 7 0 1 1 10 3zm0 2a5 5 0 1 0 0 10 5 5 0 0 0 0-10z',
};

// icon returns a 24x24 SVG icon.
export function icon(name, cls = 'icon') {
  return h('svg:svg', { class: cls, viewBox: '0 0 24 24', 'aria-hidden': 'true' }, h('svg:path', { d: icons[name] || '' }));
}

const numberFmt = new Intl.NumberFormat('en-US');
const decimalFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

export function fmtNum(n) {
  return numberFmt.format(n);
}

export function fmtDec(n) {
  return decimalFmt.format(n);
}

export function fmtBytes(n) {
  n = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

export function fmtSeconds(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function fmtTime(d) {
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

// badge is a small colored label.
export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}` }, text);
}

export function message(kind, ...children) {
  return h('div', { class: `msg ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

// errorText describes an error for the user.
export function errorText(err) {
  if (!err) return '';
  if (err.denied) return 'Permission denied: your roles do not allow this.';
  return err.message || String(err);
}

// dialog shows a modal dialog with content and buttons; it resolves with
// the value of the button pressed (null when dismissed).
export function dialog({ title, body, buttons, testid }) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'dialog', 'data-test': testid || 'dialog' });
    const close = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    const btns = buttons.map((b) =>
      h(
        'button',
        {
          class: `btn ${b.kind || ''}`,
          type: 'button',
          'data-action': b.action || null,
          onclick: async () => {
            if (b.check) {
              const ok = await b.check();
              if (!ok) return;
            }
            close(b.value);
          },
        },
        b.label,
      ),
    );
    dlg.append(h('h2', {}, title), h('div', { class: 'dialog-body' }, body), h('div', { class: 'dialog-buttons' }, btns));
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

// confirm asks the user to confirm an action.
export function confirm(title, text, label, kind = 'primary') {
  return dialog({
    title,
    testid: 'confirm',
    body: h('p', {}, text),
    buttons: [
      { label: 'Cancel', value: false, action: 'cancel' },
      { label, value: true, kind, action: 'confirm' },
    ],
  });
}

// toast shows a short note at the bottom of the page.
export function toast(text, kind = '') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', class: 'toasts', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const t = h('div', { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), 4000);
}
