// Calls to the node's JSON gateway (etcd's grpc-gateway paths) and to the
// console's own endpoints, and helpers for the byte strings etcd keys are.
//
// The auth token lives in this module's memory only: never in local or
// session storage, never in a URL. Reloading the page forgets it.

let token = null;
let unauthenticated = () => {};

export function setToken(t) {
  token = t || null;
}

export function hasToken() {
  return token !== null;
}

// onUnauthenticated registers what to do when the server refuses the
// token (expired, or its user's password changed).
export function onUnauthenticated(fn) {
  unauthenticated = fn;
}

export class APIError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
  get denied() {
    return this.status === 403;
  }
  get compacted() {
    return /compacted/.test(this.message);
  }
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  if (token) h.Authorization = token;
  return h;
}

async function answer(resp) {
  const text = await resp.text();
  let data = {};
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      throw new APIError(resp.status, 13, text.trim());
    }
  }
  if (!resp.ok) {
    const err = new APIError(resp.status, data.code, data.message);
    if (resp.status === 401 && token) unauthenticated(err);
    throw err;
  }
  return data;
}

// call makes a unary gateway call: POST path with body as JSON.
export async function call(path, body, { signal } = {}) {
  const resp = await fetch(path, {
    method: 'POST',
    headers: headers(),
    body: JSON.stringify(body || {}),
    signal,
    cache: 'no-store',
    credentials: 'omit',
  });
  return answer(resp);
}

// get reads one of the console's own endpoints.
export async function get(path, { signal } = {}) {
  const h = {};
  if (token) h.Authorization = token;
  const resp = await fetch(path, { headers: h, signal, cache: 'no-store', credentials: 'omit' });
  return answer(resp);
}

// stream opens a streaming gateway call whose requests are the JSON values
// in bodies, and calls onMessage with each result line as it arrives. It
// resolves when the stream ends and rejects on an error line, a failed
// request or when signal aborts.
export async function stream(path, bodies, onMessage, { signal } = {}) {
  const resp = await fetch(path, {
    method: 'POST',
    headers: headers(),
    body: bodies.map((b) => JSON.stringify(b)).join('\n'),
    signal,
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!resp.ok) {
    await answer(resp);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.error) {
        if (msg.error.code === 16 && token) unauthenticated(msg.error);
        throw new APIError(0, msg.error.code, msg.error.message);
      }
      onMessage(msg.result || {});
    }
  }
}

// Byte strings. Keys and values travel in base64; the console works on
// Uint8Arrays so that keys compare in etcd's byte order.

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(s) {
  return encoder.encode(s);
}

export function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function unb64(s) {
  if (!s) return new Uint8Array(0);
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function cmp(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

export function equal(a, b) {
  return cmp(a, b) === 0;
}

export function startsWith(b, prefix) {
  if (b.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

// prefixEnd is the end of the keys starting with p, as etcd computes it:
// null when every key from p on has the prefix (p empty or all 0xff).
export function prefixEnd(p) {
  const end = Uint8Array.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.slice(0, i + 1);
    }
  }
  return null;
}

// after is the first key after k.
export function after(k) {
  return concat(k, new Uint8Array([0]));
}

// rangeOf is a range request's key and range_end (base64) for [lo, hi),
// hi null meaning no end: etcd's "\0" range end (and, since a key is never
// empty, "\0" as the start of everything).
export function rangeOf(lo, hi) {
  return {
    key: b64(lo.length ? lo : new Uint8Array([0])),
    range_end: b64(hi || new Uint8Array([0])),
  };
}

// text decodes UTF-8, or returns null when bytes are not valid UTF-8.
export function text(bytes) {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

// show is a key for display: its text when it is printable UTF-8, else
// with the bytes that are not escaped as \xNN.
export function show(bytes) {
  const t = text(bytes);
  // eslint-disable-next-line no-control-regex
  if (t !== null && !/[\u0000-\u001f\u007f]/.test(t)) return t;
  let s = '';
  for (const b of bytes) {
    s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0');
  }
  return s;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// Keys in the page's address: printable ASCII as is, other bytes as %XX,
// so that any key survives (decodeURIComponent would refuse invalid UTF-8).
export function keyToPath(bytes) {
  let s = '';
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    s += /[A-Za-z0-9\-_.~/!$&'()*+,;=:@]/.test(c) && c !== '?' && c !== '#' ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return s;
}

export function pathToKey(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (s[i] === '%' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) {
      out.push(c);
    } else {
      out.push(...encoder.encode(s[i]));
    }
  }
  return new Uint8Array(out);
}

// Lease IDs are 64-bit: the gateway sends them as decimal strings; the
// console shows them in hex, as etcdctl does.
export function leaseHex(id) {
  if (!id || id === '0') return '';
  return BigInt.asUintN(64, BigInt(id)).toString(16);
}

export function leaseDec(hexID) {
  return BigInt.asIntN(64, BigInt('0x' + hexID)).toString();
}
