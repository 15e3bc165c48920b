/**
 * Decoding of text values per Specific Character Set (0008,0005): single-byte sets, UTF-8,
 * GB18030/GBK, and ISO 2022 code extensions with escape sequences (PS3.5 6.1, PS3.3 C.12.1.1.2).
 */
import { TextDecoder } from 'node:util';

/** Which delimiters end a run of a designated character set (PS3.5 6.1.2.5.3). */
export type TextKind = 'multi-valued' | 'person-name' | 'single-valued';

/** Decodes the raw bytes of one text element into a string (delimiters kept). */
export type TextDecodeFn = (bytes: Uint8Array, kind: TextKind) => string;

/** A code element designated into G0 (7-bit bytes) or G1 (8-bit bytes). */
type CodeSet =
  | { kind: 'ascii' }
  | { kind: 'single-byte'; label: string }
  | { kind: 'jis-x-0208' }
  | { kind: 'jis-x-0212' }
  | { kind: 'euc'; label: string };

const ASCII: CodeSet = { kind: 'ascii' };
const LATIN1 = 'latin1';

/** Defined Terms without code extensions -> WHATWG encoding label (PS3.3 table C.12-2, C.12-5). */
const PLAIN_TERMS: Record<string, string> = {
  '': LATIN1, // default repertoire is ASCII; latin1 keeps stray 8-bit bytes readable
  ISO_IR_6: LATIN1,
  'ISO_IR 6': LATIN1,
  'ISO_IR 100': LATIN1,
  'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3',
  'ISO_IR 110': 'iso-8859-4',
  'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6',
  'ISO_IR 126': 'iso-8859-7',
  'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9',
  'ISO_IR 203': 'iso-8859-15',
  'ISO_IR 13': 'shift_jis', // JIS X 0201: romaji + half-width katakana, a subset of Shift JIS
  'ISO_IR 166': 'windows-874', // TIS 620-2533
  'ISO_IR 192': 'utf-8',
  GB18030: 'gb18030',
  GBK: 'gbk',
};

/** ISO 2022 Defined Terms -> what they designate initially (PS3.3 table C.12-3, C.12-4). */
const EXTENSION_TERMS: Record<string, { g0: CodeSet; g1: CodeSet | null }> = {
  'ISO 2022 IR 6': { g0: ASCII, g1: null },
  'ISO 2022 IR 13': { g0: ASCII, g1: { kind: 'single-byte', label: 'shift_jis' } },
  'ISO 2022 IR 87': { g0: { kind: 'jis-x-0208' }, g1: null },
  'ISO 2022 IR 159': { g0: { kind: 'jis-x-0212' }, g1: null },
  'ISO 2022 IR 149': { g0: ASCII, g1: { kind: 'euc', label: 'euc-kr' } },
  'ISO 2022 IR 58': { g0: ASCII, g1: { kind: 'euc', label: 'gb18030' } },
};
for (const [ir, label] of Object.entries({ 100: LATIN1, 101: 'iso-8859-2', 109: 'iso-8859-3', 110: 'iso-8859-4', 144: 'iso-8859-5', 127: 'iso-8859-6', 126: 'iso-8859-7', 138: 'iso-8859-8', 148: 'iso-8859-9', 203: 'iso-8859-15', 166: 'windows-874' })) {
  EXTENSION_TERMS[`ISO 2022 IR ${ir}`] = { g0: ASCII, g1: { kind: 'single-byte', label } };
}

/** Escape sequences (bytes after ESC) -> the register they designate into (PS3.3 table C.12-3, C.12-4). */
const ESCAPES: [number[], 0 | 1, CodeSet][] = [
  [[0x28, 0x42], 0, ASCII], // ESC ( B
  [[0x28, 0x4a], 0, ASCII], // ESC ( J  JIS X 0201 romaji: ASCII but for yen/overline
  [[0x29, 0x49], 1, { kind: 'single-byte', label: 'shift_jis' }], // ESC ) I  JIS X 0201 katakana
  [[0x24, 0x42], 0, { kind: 'jis-x-0208' }], // ESC $ B
  [[0x24, 0x28, 0x44], 0, { kind: 'jis-x-0212' }], // ESC $ ( D
  [[0x24, 0x29, 0x43], 1, { kind: 'euc', label: 'euc-kr' }], // ESC $ ) C  KS X 1001
  [[0x24, 0x29, 0x41], 1, { kind: 'euc', label: 'gb18030' }], // ESC $ ) A  GB 2312
  [[0x2d, 0x41], 1, { kind: 'single-byte', label: LATIN1 }],
  [[0x2d, 0x42], 1, { kind: 'single-byte', label: 'iso-8859-2' }],
  [[0x2d, 0x43], 1, { kind: 'single-byte', label: 'iso-8859-3' }],
  [[0x2d, 0x44], 1, { kind: 'single-byte', label: 'iso-8859-4' }],
  [[0x2d, 0x4c], 1, { kind: 'single-byte', label: 'iso-8859-5' }],
  [[0x2d, 0x47], 1, { kind: 'single-byte', label: 'iso-8859-6' }],
  [[0x2d, 0x46], 1, { kind: 'single-byte', label: 'iso-8859-7' }],
  [[0x2d, 0x48], 1, { kind: 'single-byte', label: 'iso-8859-8' }],
  [[0x2d, 0x4d], 1, { kind: 'single-byte', label: 'iso-8859-9' }],
  [[0x2d, 0x62], 1, { kind: 'single-byte', label: 'iso-8859-15' }],
  [[0x2d, 0x54], 1, { kind: 'single-byte', label: 'windows-874' }],
];

const decoders = new Map<string, TextDecoder>();

function decodeWith(label: string, bytes: Uint8Array): string {
  if (label === LATIN1) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  let decoder = decoders.get(label);
  if (!decoder) {
    decoder = new TextDecoder(label);
    decoders.set(label, decoder);
  }
  return decoder.decode(bytes);
}

const CONTROL_DELIMITERS = [0x09, 0x0a, 0x0c, 0x0d];
const DELIMITERS: Record<TextKind, ReadonlySet<number>> = {
  'single-valued': new Set(CONTROL_DELIMITERS),
  'multi-valued': new Set([...CONTROL_DELIMITERS, 0x5c]),
  'person-name': new Set([...CONTROL_DELIMITERS, 0x5c, 0x5e, 0x3d]),
};

/**
 * Builds the text decoder for a data set's Specific Character Set (PS3.3 C.12.1.1.2); unknown
 * terms fall back to Latin-1 so that a header with an odd term is still readable.
 */
export function createTextDecoder(specificCharacterSet: readonly (string | null)[] | null): TextDecodeFn {
  const terms = (specificCharacterSet ?? []).map((t) => (t ?? '').trim().toUpperCase().replace(/^ISO-IR/, 'ISO_IR'));
  const first = terms[0] ?? '';
  const usesExtensions = terms.length > 1 || first.startsWith('ISO 2022');
  if (!usesExtensions || first === 'ISO_IR 192' || first === 'GB18030' || first === 'GBK') {
    const label = PLAIN_TERMS[first] ?? LATIN1;
    return (bytes) => decodeWith(label, bytes);
  }
  // With code extensions, value 1 is the initial designation; a plain term there means its 2022 form.
  const initialTerm = first === '' ? 'ISO 2022 IR 6' : first.replace(/^ISO_IR /, 'ISO 2022 IR ');
  const initial = EXTENSION_TERMS[initialTerm] ?? EXTENSION_TERMS['ISO 2022 IR 6'];
  return (bytes, kind) => decodeIso2022(bytes, initial.g0, initial.g1, DELIMITERS[kind]);
}

function decodeIso2022(bytes: Uint8Array, initialG0: CodeSet, initialG1: CodeSet | null, delimiters: ReadonlySet<number>): string {
  let g0 = initialG0;
  let g1 = initialG1;
  let out = '';
  let runStart = 0;
  let i = 0;
  const flush = (end: number) => {
    if (end > runStart) out += decodeRun(bytes.subarray(runStart, end), g0, g1);
  };
  while (i < bytes.length) {
    const b = bytes[i];
    if (b === 0x1b) {
      flush(i);
      const match = ESCAPES.find(([seq]) => seq.every((s, k) => bytes[i + 1 + k] === s));
      if (match) {
        if (match[1] === 0) g0 = match[2];
        else g1 = match[2];
        i += 1 + match[0].length;
      } else i += 1; // unknown escape: drop the ESC, keep going
      runStart = i;
    } else if (delimiters.has(b) && g0.kind === 'ascii') {
      // Delimiters are only recognised in a single-byte G0; after one the initial sets apply again.
      flush(i);
      out += String.fromCharCode(b);
      g0 = initialG0;
      g1 = initialG1;
      i += 1;
      runStart = i;
    } else i += 1;
  }
  flush(i);
  return out;
}

/** Decodes bytes under one designation state: bytes < 0x80 through G0, the others through G1. */
function decodeRun(run: Uint8Array, g0: CodeSet, g1: CodeSet | null): string {
  let out = '';
  let start = 0;
  while (start < run.length) {
    const high = run[start] >= 0x80;
    let end = start + 1;
    while (end < run.length && run[end] >= 0x80 === high) end++;
    const part = run.subarray(start, end);
    out += high ? decodeHigh(part, g1) : decodeLow(part, g0);
    start = end;
  }
  return out;
}

function decodeLow(part: Uint8Array, g0: CodeSet): string {
  if (g0.kind === 'jis-x-0208' || g0.kind === 'jis-x-0212') {
    // 7-bit JIS pairs are EUC-JP with the high bits set (JIS X 0212 behind an SS3 prefix).
    const prefix = g0.kind === 'jis-x-0212' ? 1 : 0;
    const euc = new Uint8Array((part.length >> 1) * (2 + prefix));
    let k = 0;
    for (let j = 0; j + 1 < part.length; j += 2) {
      if (prefix) euc[k++] = 0x8f;
      euc[k++] = part[j] | 0x80;
      euc[k++] = part[j + 1] | 0x80;
    }
    return decodeWith('euc-jp', euc);
  }
  return decodeWith(LATIN1, part);
}

function decodeHigh(part: Uint8Array, g1: CodeSet | null): string {
  if (!g1) return decodeWith(LATIN1, part);
  if (g1.kind === 'single-byte' || g1.kind === 'euc') return decodeWith(g1.label, part);
  return decodeWith(LATIN1, part);
}
