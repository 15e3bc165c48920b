/**
 * The WebAssembly decoders of the @cornerstonejs codec family (Emscripten builds of CharLS,
 * OpenJPEG, OpenJPH and libjpeg-turbo), loaded lazily, once per process, on first use: nothing
 * happens at import. Each decode uses a fresh decoder object and frees it (`delete`), so WASM
 * heap use is bounded by one frame per codec at a time.
 *
 * Why these: they are the decoders OHIF / Cornerstone3D ship, kept up to date by the same
 * maintainers, load in Node 20 CommonJS without native builds, and cover JPEG-LS, JPEG 2000,
 * HTJ2K and 8-bit JPEG. Their `decode` variants carry only the decoder (smaller WASM).
 */

/** The embind surface shared by the decoders we use. */
interface EmbindDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  decode(): void;
  getDecodedBuffer(): Uint8Array;
  getFrameInfo(): { width: number; height: number; bitsPerSample: number; componentCount: number; isSigned?: boolean };
  getInterleaveMode?(): number;
  getNearLossless?(): number;
  getColorSpace?(): number;
  readHeader?(): void;
  delete(): void;
}

type EmscriptenFactory = (options?: Record<string, unknown>) => Promise<Record<string, new () => EmbindDecoder>>;

/** The codecs this module can load. */
export type WasmCodecName = 'charls' | 'openjpeg' | 'openjph' | 'libjpeg-turbo';

const SPECS: Record<WasmCodecName, { load: () => EmscriptenFactory; decoderClass: string }> = {
  charls: { load: () => require('@cornerstonejs/codec-charls/decodewasmjs'), decoderClass: 'JpegLSDecoder' },
  openjpeg: { load: () => require('@cornerstonejs/codec-openjpeg/decodewasmjs'), decoderClass: 'J2KDecoder' },
  openjph: { load: () => require('@cornerstonejs/codec-openjph/wasmjs'), decoderClass: 'HTJ2KDecoder' },
  'libjpeg-turbo': { load: () => require('@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs'), decoderClass: 'JPEGDecoder' },
};

const modules = new Map<WasmCodecName, Promise<Record<string, new () => EmbindDecoder>>>();

function loadModule(name: WasmCodecName): Promise<Record<string, new () => EmbindDecoder>> {
  let module = modules.get(name);
  if (!module) {
    const spec = SPECS[name];
    // Emscripten writes to stdout/stderr through print/printErr: route both to nowhere (errors surface as exceptions).
    module = spec.load()({ print: () => undefined, printErr: () => undefined });
    modules.set(name, module);
    module.catch(() => modules.delete(name)); // a failed load may be retried
  }
  return module;
}

/** What a WASM decoder produced: samples as bytes (little endian for > 8 bits), and how they are laid out. */
export interface WasmDecodeResult {
  data: Buffer;
  width: number;
  height: number;
  bitsPerSample: number;
  componentCount: number;
  /** CharLS only: 0 = planes one after another (color-by-plane), 1 = line interleaved, 2 = sample interleaved. */
  interleaveMode?: number;
}

/** Decodes one code stream with the named codec. Throws the codec's error (a message or an Emscripten number) on bad input. */
export async function decodeWithWasm(name: WasmCodecName, encoded: Uint8Array): Promise<WasmDecodeResult> {
  const module = await loadModule(name);
  const Decoder = module[SPECS[name].decoderClass];
  const decoder = new Decoder();
  try {
    decoder.getEncodedBuffer(encoded.length).set(encoded);
    decoder.decode();
    const info = decoder.getFrameInfo();
    // Copy out of the WASM heap: the view dies with the decoder.
    const data = Buffer.from(decoder.getDecodedBuffer());
    return {
      data,
      width: info.width,
      height: info.height,
      bitsPerSample: info.bitsPerSample,
      componentCount: info.componentCount,
      interleaveMode: decoder.getInterleaveMode?.(),
    };
  } finally {
    decoder.delete();
  }
}

/** Loads a codec ahead of the first request (optional warm-up; ~20 ms each). */
export async function preloadWasmCodec(name: WasmCodecName): Promise<void> {
  await loadModule(name);
}
