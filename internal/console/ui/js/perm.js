// What the signed-in user may do, from /ui/api/session: the console shows
// and offers only that. The server checks every request anyway.

import { unb64, cmp } from './api.js';

function decode(ivs) {
  return (ivs || []).map((iv) => ({ start: unb64(iv.start), end: iv.end == null ? null : unb64(iv.end) }));
}

// before reports whether a < b, for interval ends (null: unbounded).
function endLess(a, b) {
  if (a === null) return false;
  if (b === null) return true;
  return cmp(a, b) < 0;
}

// clip returns the parts of [lo, hi) that the intervals ivs cover.
function clip(ivs, lo, hi) {
  const out = [];
  for (const iv of ivs) {
    const start = cmp(iv.start, lo) > 0 ? iv.start : lo;
    const end = endLess(iv.end, hi) ? iv.end : hi;
    if (end === null || cmp(start, end) < 0) out.push({ start, end });
  }
  return out;
}

function contains(ivs, key) {
  return ivs.some((iv) => cmp(key, iv.start) >= 0 && (iv.end === null || cmp(key, iv.end) < 0));
}

export class Perms {
  constructor(session) {
    this.authEnabled = !!session.auth_enabled;
    this.user = session.user || '';
    this.root = !!session.root;
    this.read = decode(session.read);
    this.write = decode(session.write);
  }

  // readable returns the parts of [lo, hi) the user may read.
  readable(lo, hi) {
    return this.root ? [{ start: lo, end: hi }] : clip(this.read, lo, hi);
  }

  // readsAll reports whether the user may read every key of [lo, hi).
  readsAll(lo, hi) {
    if (this.root) return true;
    const parts = clip(this.read, lo, hi);
    return parts.length === 1 && cmp(parts[0].start, lo) === 0 && (hi === null ? parts[0].end === null : parts[0].end !== null && cmp(parts[0].end, hi) === 0);
  }

  canRead(key) {
    return this.root || contains(this.read, key);
  }

  canWrite(key) {
    return this.root || contains(this.write, key);
  }

  // writesSome reports whether the user may write any key of [lo, hi).
  writesSome(lo, hi) {
    return this.root || clip(this.write, lo, hi).length > 0;
  }

  get readOnly() {
    return !this.root && this.write.length === 0;
  }
}
