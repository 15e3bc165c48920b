/**
 * Sequential DCT JPEG with Huffman coding, 8 or 12 bits per sample (ISO 10918-1 processes 1, 2
 * and 4; DICOM JPEG Extended 1.2.840.10008.1.2.4.51, PS3.5 A.4.1). Written here because no
 * maintained npm decoder handles 12-bit precision: libjpeg-turbo's WASM build is 8-bit only, and
 * jpeg-js clamps to 8 bits. 8-bit streams go to libjpeg-turbo; this decoder serves 12-bit ones
 * (and is checked against libjpeg-turbo on 8-bit streams in the tests).
 *
 * Covers: baseline and extended Huffman frames (SOF0/SOF1), 8- and 16-bit quantization tables,
 * interleaved and non-interleaved scans, any sampling factors (upsampled by replication),
 * restart intervals. Not covered (refused with JpegUnsupportedError): progressive, lossless,
 * hierarchical and arithmetic-coded processes. Color is returned as coded (no YCbCr conversion).
 */

/** The stream uses a JPEG process this decoder does not implement. */
export class JpegUnsupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JpegUnsupportedError';
  }
}

/** Samples of every component, interleaved (component order as in the frame header), one Uint16 each. */
export interface JpegDctImage {
  width: number;
  height: number;
  precision: number;
  components: number;
  samples: Uint16Array;
}

interface Component {
  id: number;
  h: number;
  v: number;
  tq: number;
  blocksPerLine: number;
  blocksPerColumn: number;
  /** Samples of the component at its own resolution, padded to whole MCUs. */
  plane: Uint16Array;
  planeWidth: number;
  pred: number;
  dcTable?: HuffmanTable;
  acTable?: HuffmanTable;
}

interface HuffmanTable {
  maxCode: Int32Array;
  valPtr: Int32Array;
  minCode: Int32Array;
  values: Uint8Array;
}

interface Frame {
  precision: number;
  width: number;
  height: number;
  components: Component[];
  hMax: number;
  vMax: number;
  mcusPerLine: number;
  mcusPerColumn: number;
}

/** Natural (row-major) index of the k-th coefficient in zig-zag order (ISO 10918-1 figure A.6). */
const ZIGZAG = new Uint8Array([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57,
  50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]);

/** cos((2x+1)uπ/16) * C(u) / 2, indexed [u * 8 + x]. */
const IDCT_BASIS = (() => {
  const basis = new Float64Array(64);
  for (let u = 0; u < 8; u++) {
    const cu = u === 0 ? Math.SQRT1_2 : 1;
    for (let x = 0; x < 8; x++) basis[u * 8 + x] = (cu / 2) * Math.cos(((2 * x + 1) * u * Math.PI) / 16);
  }
  return basis;
})();

/** Decodes a sequential Huffman DCT JPEG stream. Throws JpegUnsupportedError or Error (damaged stream). */
export function decodeJpegDct(data: Uint8Array): JpegDctImage {
  if (data.length < 4 || data[0] !== 0xff || data[1] !== 0xd8) throw new Error('not a JPEG stream (no SOI marker)');
  const quant: Array<Int32Array | undefined> = [];
  const dc: Array<HuffmanTable | undefined> = [];
  const ac: Array<HuffmanTable | undefined> = [];
  let frame: Frame | null = null;
  let restartInterval = 0;
  let pos = 2;
  for (;;) {
    if (pos + 1 >= data.length) break; // missing EOI: use what was decoded
    if (data[pos] !== 0xff) {
      pos++; // garbage between segments: tolerated, as libjpeg does
      continue;
    }
    const marker = data[pos + 1];
    pos += 2;
    if (marker === 0xff || marker === 0x00 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      if (marker === 0xff) pos--; // fill byte
      continue;
    }
    if (marker === 0xd9) break; // EOI
    const length = (data[pos] << 8) | data[pos + 1];
    const end = pos + length;
    if (end > data.length) throw new Error('JPEG segment runs past the end of the stream');
    const body = pos + 2;
    switch (marker) {
      case 0xc0:
      case 0xc1:
        frame = readFrameHeader(data, body);
        break;
      case 0xc2: case 0xc3: case 0xc5: case 0xc6: case 0xc7:
      case 0xc9: case 0xca: case 0xcb: case 0xcd: case 0xce: case 0xcf:
        throw new JpegUnsupportedError(`JPEG process with SOF marker FF${marker.toString(16).toUpperCase()} is not supported (sequential Huffman DCT only)`);
      case 0xc4:
        readHuffmanTables(data, body, end, dc, ac);
        break;
      case 0xdb:
        readQuantizationTables(data, body, end, quant);
        break;
      case 0xdd:
        restartInterval = (data[body] << 8) | data[body + 1];
        break;
      case 0xda: {
        if (!frame) throw new Error('JPEG scan before the frame header');
        pos = decodeScan(data, body, end, frame, quant, dc, ac, restartInterval);
        continue;
      }
      default:
        break; // APPn, COM, DNL and the like: skipped
    }
    pos = end;
  }
  if (!frame) throw new Error('JPEG stream has no frame header');
  return assemble(frame);
}

function readFrameHeader(data: Uint8Array, at: number): Frame {
  const precision = data[at];
  if (precision !== 8 && precision !== 12) throw new JpegUnsupportedError(`JPEG sample precision ${precision} is not supported`);
  const height = (data[at + 1] << 8) | data[at + 2];
  const width = (data[at + 3] << 8) | data[at + 4];
  const count = data[at + 5];
  if (width === 0 || height === 0) throw new JpegUnsupportedError('JPEG with the height given by a DNL marker is not supported');
  const components: Component[] = [];
  for (let i = 0; i < count; i++) {
    const o = at + 6 + i * 3;
    const h = data[o + 1] >> 4;
    const v = data[o + 1] & 15;
    if (h < 1 || h > 4 || v < 1 || v > 4) throw new Error(`invalid JPEG sampling factors ${h}x${v}`);
    components.push({ id: data[o], h, v, tq: data[o + 2], blocksPerLine: 0, blocksPerColumn: 0, plane: new Uint16Array(0), planeWidth: 0, pred: 0 });
  }
  const hMax = Math.max(...components.map((c) => c.h));
  const vMax = Math.max(...components.map((c) => c.v));
  const mcusPerLine = Math.ceil(width / (8 * hMax));
  const mcusPerColumn = Math.ceil(height / (8 * vMax));
  for (const c of components) {
    c.blocksPerLine = Math.ceil(Math.ceil((width * c.h) / hMax) / 8);
    c.blocksPerColumn = Math.ceil(Math.ceil((height * c.v) / vMax) / 8);
    c.planeWidth = mcusPerLine * c.h * 8;
    c.plane = new Uint16Array(c.planeWidth * mcusPerColumn * c.v * 8);
  }
  return { precision, width, height, components, hMax, vMax, mcusPerLine, mcusPerColumn };
}

function readHuffmanTables(data: Uint8Array, at: number, end: number, dc: Array<HuffmanTable | undefined>, ac: Array<HuffmanTable | undefined>): void {
  while (at < end) {
    const tc = data[at] >> 4;
    const th = data[at] & 15;
    const counts = data.subarray(at + 1, at + 17);
    let total = 0;
    for (let i = 0; i < 16; i++) total += counts[i];
    const values = data.slice(at + 17, at + 17 + total);
    (tc === 0 ? dc : ac)[th] = buildHuffmanTable(counts, values);
    at += 17 + total;
  }
}

/** The decoding tables of ISO 10918-1 F.2.2.3 (MAXCODE, VALPTR, MINCODE) per code length 1..16. */
function buildHuffmanTable(counts: Uint8Array, values: Uint8Array): HuffmanTable {
  const maxCode = new Int32Array(18).fill(-1);
  const valPtr = new Int32Array(17);
  const minCode = new Int32Array(17);
  let code = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    const n = counts[len - 1];
    if (n > 0) {
      valPtr[len] = k;
      minCode[len] = code;
      code += n;
      k += n;
      maxCode[len] = code - 1;
    }
    code <<= 1;
  }
  maxCode[17] = 0x7fffffff; // sentinel: lets a damaged stream fail instead of looping
  return { maxCode, valPtr, minCode, values };
}

function readQuantizationTables(data: Uint8Array, at: number, end: number, quant: Array<Int32Array | undefined>): void {
  while (at < end) {
    const pq = data[at] >> 4;
    const tq = data[at] & 15;
    const table = new Int32Array(64); // in zig-zag order, as transmitted
    at++;
    for (let k = 0; k < 64; k++) {
      table[k] = pq === 0 ? data[at] : (data[at] << 8) | data[at + 1];
      at += pq === 0 ? 1 : 2;
    }
    quant[tq] = table;
  }
}

/** Reads entropy-coded bits, removing stuffed zero bytes; at a marker it yields zeros and stays put. */
class BitReader {
  private bits = 0;
  private count = 0;
  constructor(
    private readonly data: Uint8Array,
    public pos: number,
  ) {}

  bit(): number {
    if (this.count === 0) {
      const b = this.data[this.pos];
      if (b === 0xff) {
        const next = this.data[this.pos + 1];
        if (next === 0x00) this.pos += 2;
        else return 0; // a marker: the scan data is over (or damaged)
      } else if (this.pos >= this.data.length) {
        return 0;
      } else {
        this.pos++;
      }
      this.bits = b;
      this.count = 8;
    }
    this.count--;
    return (this.bits >> this.count) & 1;
  }

  receive(length: number): number {
    let v = 0;
    for (let i = 0; i < length; i++) v = (v << 1) | this.bit();
    return v;
  }

  /** Drops the remaining bits of the current byte (before a restart marker). */
  align(): void {
    this.count = 0;
  }
}

function decodeHuffman(reader: BitReader, table: HuffmanTable): number {
  let code = reader.bit();
  let len = 1;
  while (code > table.maxCode[len]) {
    code = (code << 1) | reader.bit();
    if (++len > 16) throw new Error('invalid Huffman code in JPEG stream');
  }
  return table.values[table.valPtr[len] + code - table.minCode[len]];
}

/** EXTEND of ISO 10918-1 F.2.2.1: `s` bits to a signed difference. */
function receiveExtend(reader: BitReader, s: number): number {
  if (s === 0) return 0;
  const v = reader.receive(s);
  return v < 1 << (s - 1) ? v - (1 << s) + 1 : v;
}

function decodeScan(
  data: Uint8Array,
  at: number,
  headerEnd: number,
  frame: Frame,
  quant: Array<Int32Array | undefined>,
  dc: Array<HuffmanTable | undefined>,
  ac: Array<HuffmanTable | undefined>,
  restartInterval: number,
): number {
  const count = data[at];
  const scan: Component[] = [];
  for (let i = 0; i < count; i++) {
    const id = data[at + 1 + i * 2];
    const tables = data[at + 2 + i * 2];
    const c = frame.components.find((x) => x.id === id);
    if (!c) throw new Error(`JPEG scan names unknown component ${id}`);
    c.dcTable = dc[tables >> 4];
    c.acTable = ac[tables & 15];
    if (!c.dcTable || !c.acTable) throw new Error('JPEG scan uses a Huffman table that was not defined');
    if (!quant[c.tq]) throw new Error('JPEG frame uses a quantization table that was not defined');
    c.pred = 0;
    scan.push(c);
  }
  const reader = new BitReader(data, headerEnd);
  const coefficients = new Float64Array(64);
  const temp = new Float64Array(64);
  const maxValue = (1 << frame.precision) - 1;
  const shift = 1 << (frame.precision - 1);

  const decodeBlock = (c: Component, blockRow: number, blockCol: number) => {
    coefficients.fill(0);
    const q = quant[c.tq]!;
    const t = decodeHuffman(reader, c.dcTable!);
    c.pred += receiveExtend(reader, t);
    coefficients[0] = c.pred * q[0];
    for (let k = 1; k < 64; ) {
      const rs = decodeHuffman(reader, c.acTable!);
      const s = rs & 15;
      const r = rs >> 4;
      if (s === 0) {
        if (r < 15) break; // end of block
        k += 16;
        continue;
      }
      k += r;
      if (k > 63) break;
      coefficients[ZIGZAG[k]] = receiveExtend(reader, s) * q[k];
      k++;
    }
    inverseDct(coefficients, temp);
    const base = blockRow * 8 * c.planeWidth + blockCol * 8;
    for (let y = 0; y < 8; y++) {
      const row = base + y * c.planeWidth;
      for (let x = 0; x < 8; x++) {
        const v = Math.round(coefficients[y * 8 + x]) + shift;
        c.plane[row + x] = v < 0 ? 0 : v > maxValue ? maxValue : v;
      }
    }
  };

  const single = scan.length === 1;
  const c0 = scan[0];
  const units = single ? c0.blocksPerLine * c0.blocksPerColumn : frame.mcusPerLine * frame.mcusPerColumn;
  let done = 0;
  while (done < units) {
    const batch = restartInterval > 0 ? Math.min(restartInterval, units - done) : units - done;
    for (let n = 0; n < batch; n++, done++) {
      if (single) {
        // Non-interleaved: the component's own blocks, row by row (A.2.2).
        decodeBlock(c0, Math.floor(done / c0.blocksPerLine), done % c0.blocksPerLine);
      } else {
        const mcuRow = Math.floor(done / frame.mcusPerLine);
        const mcuCol = done % frame.mcusPerLine;
        for (const c of scan) {
          for (let by = 0; by < c.v; by++) for (let bx = 0; bx < c.h; bx++) decodeBlock(c, mcuRow * c.v + by, mcuCol * c.h + bx);
        }
      }
    }
    if (done < units) {
      // Restart marker: byte aligned, predictions reset (F.2.1.3.1, F.2.2.1).
      reader.align();
      while (reader.pos + 1 < data.length && !(data[reader.pos] === 0xff && data[reader.pos + 1] >= 0xd0 && data[reader.pos + 1] <= 0xd7)) reader.pos++;
      reader.pos += 2;
      for (const c of scan) c.pred = 0;
    }
  }
  // Continue at the next marker after the scan.
  let pos = reader.pos;
  while (pos + 1 < data.length && !(data[pos] === 0xff && data[pos + 1] !== 0x00 && !(data[pos + 1] >= 0xd0 && data[pos + 1] <= 0xd7))) pos++;
  return pos;
}

/** In-place 2-D inverse DCT of one 8x8 block (ISO 10918-1 A.3.3), separable: columns then rows. */
function inverseDct(block: Float64Array, temp: Float64Array): void {
  // temp[v][x] = sum_u C(u) F[v][u] cos(...x...)
  for (let v = 0; v < 8; v++) {
    for (let x = 0; x < 8; x++) {
      let sum = 0;
      for (let u = 0; u < 8; u++) sum += IDCT_BASIS[u * 8 + x] * block[v * 8 + u];
      temp[v * 8 + x] = sum;
    }
  }
  for (let y = 0; y < 8; y++) {
    for (let x = 0; x < 8; x++) {
      let sum = 0;
      for (let v = 0; v < 8; v++) sum += IDCT_BASIS[v * 8 + y] * temp[v * 8 + x];
      block[y * 8 + x] = sum;
    }
  }
}

/** Interleaves the component planes at full resolution (replicating subsampled components). */
function assemble(frame: Frame): JpegDctImage {
  const { width, height, components, hMax, vMax } = frame;
  const n = components.length;
  const samples = new Uint16Array(width * height * n);
  for (let ci = 0; ci < n; ci++) {
    const c = components[ci];
    const sx = c.h / hMax;
    const sy = c.v / vMax;
    for (let y = 0; y < height; y++) {
      const row = Math.floor(y * sy) * c.planeWidth;
      let out = y * width * n + ci;
      for (let x = 0; x < width; x++, out += n) samples[out] = c.plane[row + Math.floor(x * sx)];
    }
  }
  return { width, height, precision: frame.precision, components: n, samples };
}
