// A small msgpack decoder for the execute page: results come out of the sandbox as msgpack bytes
// (already checked there: well-formed, string keys, no extension types). Returns plain JS values.

const utf8 = new TextDecoder("utf-8", { fatal: true });

export function decode(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;

  const take = (n) => {
    if (at + n > bytes.length) throw new Error("msgpack: truncated");
    const start = at;
    at += n;
    return start;
  };
  const str = (n) => utf8.decode(bytes.subarray(take(n), at));
  const bin = (n) => bytes.slice(take(n), at);
  const array = (n) => Array.from({ length: n }, () => value());
  const map = (n) => {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      out[String(key)] = value();
    }
    return out;
  };
  const u8 = () => view.getUint8(take(1));
  const u16 = () => view.getUint16(take(2));
  const u32 = () => view.getUint32(take(4));
  const bigToNumber = (n) => (n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(n) : n);

  function value() {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xca: return view.getFloat32(take(4));
      case 0xcb: return view.getFloat64(take(8));
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return bigToNumber(view.getBigUint64(take(8)));
      case 0xd0: return view.getInt8(take(1));
      case 0xd1: return view.getInt16(take(2));
      case 0xd2: return view.getInt32(take(4));
      case 0xd3: return bigToNumber(view.getBigInt64(take(8)));
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16());
      case 0xdd: return array(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new Error(`msgpack: unsupported type 0x${b.toString(16)}`);
    }
  }

  const result = value();
  if (at !== bytes.length) throw new Error("msgpack: trailing bytes");
  return result;
}
