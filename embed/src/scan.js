// Structural msgpack scanning: where one encoded value ends, whether it is well formed, and small
// integer/string reads, all without building the value.
//
// Why not just decode? The hot path moves encoded bytes around unchanged: the broker cuts each
// dataset out of a `tasks` frame and hands the bytes to a worker (which decodes them off the main
// thread), and the runner checks a kernel's encoded result before it may reach the server. Both
// only need boundaries and validity, which a scan gives at a fraction of a decode's cost.

export const MAX_DEPTH = 100; // the result encoder's own limit; anything deeper is refused

export class ScanError extends Error {
  constructor(message) {
    super(message);
    this.name = "ScanError";
  }
}

// Options of `scanValue`: `keys` = "any" | "text" (map keys must be str or bin, as the server's
// msgpack decoder requires with strict_map_key), `ext` = whether extension types are allowed,
// `utf8` = whether str payloads are checked to be valid UTF-8 (the server's decoder rejects the
// whole frame otherwise).
const STRICT = { keys: "text", ext: false, utf8: true };
const LOOSE = { keys: "any", ext: true, utf8: false };

function need(bytes, pos, n) {
  if (pos + n > bytes.length) throw new ScanError("truncated msgpack value");
}

function u16(bytes, pos) {
  return (bytes[pos] << 8) | bytes[pos + 1];
}

function u32(bytes, pos) {
  return ((bytes[pos] << 24) >>> 0) + ((bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3]);
}

// True when bytes[start, end) is well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF).
export function isUtf8(bytes, start, end) {
  let i = start;
  while (i < end) {
    const b = bytes[i];
    if (b < 0x80) {
      i += 1;
      continue;
    }
    let n;
    let min;
    let cp;
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1;
      min = 0x80;
      cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      min = 0x800;
      cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      min = 0x10000;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n >= end) return false; // the sequence runs past the string
    for (let k = 1; k <= n; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

// Kind of the value starting at `pos`, for key checks: "str", "bin" or "other".
function kindAt(bytes, pos) {
  const b = bytes[pos];
  if ((b >= 0xa0 && b <= 0xbf) || b === 0xd9 || b === 0xda || b === 0xdb) return "str";
  if (b === 0xc4 || b === 0xc5 || b === 0xc6) return "bin";
  return "other";
}

function scan(bytes, pos, depth, opts) {
  if (depth > MAX_DEPTH + 1) throw new ScanError(`nested deeper than ${MAX_DEPTH} levels`);
  need(bytes, pos, 1);
  const b = bytes[pos];
  if (b <= 0x7f || b >= 0xe0) return pos + 1; // fixint
  if (b <= 0x8f) return scanMap(bytes, pos + 1, b & 0x0f, depth, opts);
  if (b <= 0x9f) return scanArray(bytes, pos + 1, b & 0x0f, depth, opts);
  if (b <= 0xbf) return scanStr(bytes, pos + 1, b & 0x1f, opts);
  switch (b) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
      return pos + 1;
    case 0xc4:
      need(bytes, pos, 2);
      return scanBlob(bytes, pos + 2, bytes[pos + 1]);
    case 0xc5:
      need(bytes, pos, 3);
      return scanBlob(bytes, pos + 3, u16(bytes, pos + 1));
    case 0xc6:
      need(bytes, pos, 5);
      return scanBlob(bytes, pos + 5, u32(bytes, pos + 1));
    case 0xc7:
      need(bytes, pos, 2);
      return scanExt(bytes, pos + 3, bytes[pos + 1], opts);
    case 0xc8:
      need(bytes, pos, 3);
      return scanExt(bytes, pos + 4, u16(bytes, pos + 1), opts);
    case 0xc9:
      need(bytes, pos, 5);
      return scanExt(bytes, pos + 6, u32(bytes, pos + 1), opts);
    case 0xca:
      return fixed(bytes, pos, 5);
    case 0xcb:
      return fixed(bytes, pos, 9);
    case 0xcc:
    case 0xd0:
      return fixed(bytes, pos, 2);
    case 0xcd:
    case 0xd1:
      return fixed(bytes, pos, 3);
    case 0xce:
    case 0xd2:
      return fixed(bytes, pos, 5);
    case 0xcf:
    case 0xd3:
      return fixed(bytes, pos, 9);
    case 0xd4:
      return scanExt(bytes, pos + 2, 1, opts);
    case 0xd5:
      return scanExt(bytes, pos + 2, 2, opts);
    case 0xd6:
      return scanExt(bytes, pos + 2, 4, opts);
    case 0xd7:
      return scanExt(bytes, pos + 2, 8, opts);
    case 0xd8:
      return scanExt(bytes, pos + 2, 16, opts);
    case 0xd9:
      need(bytes, pos, 2);
      return scanStr(bytes, pos + 2, bytes[pos + 1], opts);
    case 0xda:
      need(bytes, pos, 3);
      return scanStr(bytes, pos + 3, u16(bytes, pos + 1), opts);
    case 0xdb:
      need(bytes, pos, 5);
      return scanStr(bytes, pos + 5, u32(bytes, pos + 1), opts);
    case 0xdc:
      need(bytes, pos, 3);
      return scanArray(bytes, pos + 3, u16(bytes, pos + 1), depth, opts);
    case 0xdd:
      need(bytes, pos, 5);
      return scanArray(bytes, pos + 5, u32(bytes, pos + 1), depth, opts);
    case 0xde:
      need(bytes, pos, 3);
      return scanMap(bytes, pos + 3, u16(bytes, pos + 1), depth, opts);
    case 0xdf:
      need(bytes, pos, 5);
      return scanMap(bytes, pos + 5, u32(bytes, pos + 1), depth, opts);
    default:
      throw new ScanError(`invalid msgpack byte 0x${b.toString(16)}`); // 0xc1 is never used
  }
}

function fixed(bytes, pos, n) {
  need(bytes, pos, n);
  return pos + n;
}

function scanBlob(bytes, start, length) {
  need(bytes, start, length);
  return start + length;
}

function scanStr(bytes, start, length, opts) {
  need(bytes, start, length);
  if (opts.utf8 && !isUtf8(bytes, start, start + length)) throw new ScanError("a string is not valid UTF-8");
  return start + length;
}

function scanExt(bytes, dataStart, length, opts) {
  if (!opts.ext) throw new ScanError("msgpack extension types are not allowed");
  need(bytes, dataStart, length);
  return dataStart + length;
}

function scanArray(bytes, pos, count, depth, opts) {
  // Every element takes at least one byte: a count beyond the remaining bytes is a lie.
  if (count > bytes.length - pos) throw new ScanError("truncated msgpack array");
  for (let i = 0; i < count; i++) pos = scan(bytes, pos, depth + 1, opts);
  return pos;
}

function scanMap(bytes, pos, count, depth, opts) {
  if (count * 2 > bytes.length - pos) throw new ScanError("truncated msgpack map");
  for (let i = 0; i < count; i++) {
    need(bytes, pos, 1);
    if (opts.keys === "text" && kindAt(bytes, pos) === "other") {
      throw new ScanError("map keys must be strings");
    }
    pos = scan(bytes, pos, depth + 1, opts);
    pos = scan(bytes, pos, depth + 1, opts);
  }
  return pos;
}

// End offset of the value starting at `pos`; throws ScanError if it is malformed or truncated.
// `strict` (the default) applies the server's rules for values a client sends.
export function scanValue(bytes, pos = 0, strict = true) {
  return scan(bytes, pos, 1, strict ? STRICT : LOOSE);
}

// Checks that `bytes` holds exactly one strict value; returns a reason string or "" when valid.
export function checkEncoded(bytes) {
  try {
    const end = scanValue(bytes, 0, true);
    return end === bytes.length ? "" : "trailing bytes after the value";
  } catch (error) {
    if (error instanceof ScanError || error instanceof RangeError) return error.message;
    throw error;
  }
}

// Reads an integer at `pos` (fixint, uint*, int*); returns [value, end]. Refuses values beyond
// JavaScript's safe integer range rather than silently rounding them (a rounded task id would
// answer somebody else's task).
export function readInt(bytes, pos) {
  need(bytes, pos, 1);
  const b = bytes[pos];
  if (b <= 0x7f) return [b, pos + 1];
  if (b >= 0xe0) return [b - 0x100, pos + 1];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (b) {
    case 0xcc:
      need(bytes, pos, 2);
      return [bytes[pos + 1], pos + 2];
    case 0xcd:
      need(bytes, pos, 3);
      return [view.getUint16(pos + 1), pos + 3];
    case 0xce:
      need(bytes, pos, 5);
      return [view.getUint32(pos + 1), pos + 5];
    case 0xcf:
      need(bytes, pos, 9);
      return [safe(view.getBigUint64(pos + 1)), pos + 9];
    case 0xd0:
      need(bytes, pos, 2);
      return [view.getInt8(pos + 1), pos + 2];
    case 0xd1:
      need(bytes, pos, 3);
      return [view.getInt16(pos + 1), pos + 3];
    case 0xd2:
      need(bytes, pos, 5);
      return [view.getInt32(pos + 1), pos + 5];
    case 0xd3:
      need(bytes, pos, 9);
      return [safe(view.getBigInt64(pos + 1)), pos + 9];
    default:
      throw new ScanError("expected an integer");
  }
}

function safe(big) {
  if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new ScanError("integer beyond the safe range");
  }
  return Number(big);
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });

// Reads a str at `pos`; returns [string, end].
export function readStr(bytes, pos) {
  need(bytes, pos, 1);
  const b = bytes[pos];
  let start;
  let length;
  if (b >= 0xa0 && b <= 0xbf) {
    start = pos + 1;
    length = b & 0x1f;
  } else if (b === 0xd9) {
    need(bytes, pos, 2);
    start = pos + 2;
    length = bytes[pos + 1];
  } else if (b === 0xda) {
    need(bytes, pos, 3);
    start = pos + 3;
    length = u16(bytes, pos + 1);
  } else if (b === 0xdb) {
    need(bytes, pos, 5);
    start = pos + 5;
    length = u32(bytes, pos + 1);
  } else {
    throw new ScanError("expected a string");
  }
  need(bytes, start, length);
  try {
    return [textDecoder.decode(bytes.subarray(start, start + length)), start + length];
  } catch {
    throw new ScanError("a string is not valid UTF-8");
  }
}

// Reads an array or map header at `pos`; returns [count, end] (`kind` is "array" or "map").
export function readHeader(bytes, pos, kind) {
  need(bytes, pos, 1);
  const b = bytes[pos];
  if (kind === "array") {
    if (b >= 0x90 && b <= 0x9f) return [b & 0x0f, pos + 1];
    if (b === 0xdc) return [(need(bytes, pos, 3), u16(bytes, pos + 1)), pos + 3];
    if (b === 0xdd) return [(need(bytes, pos, 5), u32(bytes, pos + 1)), pos + 5];
    throw new ScanError("expected an array");
  }
  if (b >= 0x80 && b <= 0x8f) return [b & 0x0f, pos + 1];
  if (b === 0xde) return [(need(bytes, pos, 3), u16(bytes, pos + 1)), pos + 3];
  if (b === 0xdf) return [(need(bytes, pos, 5), u32(bytes, pos + 1)), pos + 5];
  throw new ScanError("expected a map");
}
