/**
 * Reads what a frame is shown with from the instance's DICOM JSON: Image Pixel attributes
 * (PS3.3 C.7.6.3), Rescale Slope/Intercept and Window Center/Width, per frame for enhanced
 * multi-frame objects (Per-Frame, then Shared Functional Groups: Pixel Value Transformation
 * (0028,9145) and Frame VOI LUT (0028,9132) Sequences, PS3.3 C.7.6.16.2.9-10), and the Palette
 * Color Lookup Table (PS3.3 C.7.6.3.1.5-6).
 */
import type { DicomJson, DicomJsonElement } from './types';
import type { PixelAttributes } from './pixel-frame';
import type { PaletteChannel, Presentation } from './pixel-render';
import { parseVoiFunction } from './pixel-window';

const TAG = {
  rows: '00280010',
  columns: '00280011',
  samplesPerPixel: '00280002',
  photometric: '00280004',
  planar: '00280006',
  bitsAllocated: '00280100',
  bitsStored: '00280101',
  pixelRepresentation: '00280103',
  windowCenter: '00281050',
  windowWidth: '00281051',
  rescaleIntercept: '00281052',
  rescaleSlope: '00281053',
  voiFunction: '00281056',
  pixelValueTransformation: '00289145',
  frameVoiLut: '00289132',
} as const;

/** Palette descriptor and data tags per channel (red, green, blue). */
export const PALETTE_TAGS = [
  { descriptor: '00281101', data: '00281201' },
  { descriptor: '00281102', data: '00281202' },
  { descriptor: '00281103', data: '00281203' },
] as const;

function first(ds: DicomJson | undefined, key: string): unknown {
  return ds?.[key]?.Value?.[0];
}

function numbers(ds: DicomJson | undefined, key: string): number[] {
  return (ds?.[key]?.Value ?? []).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
}

function item(ds: DicomJson | undefined, key: string): DicomJson | undefined {
  const v = ds?.[key]?.Value?.[0];
  return typeof v === 'object' && v !== null ? (v as DicomJson) : undefined;
}

/** Image Pixel attributes from the header (PS3.3 C.7.6.3.1), with the defaults a missing optional one implies. */
export function readPixelAttributes(ds: DicomJson): PixelAttributes {
  const int = (key: string, fallback: number) => {
    const v = first(ds, key);
    return typeof v === 'number' && Number.isInteger(v) ? v : fallback;
  };
  const bitsAllocated = int(TAG.bitsAllocated, 0);
  // Float and Double Float Pixel Data carry Bits Allocated 32 / 64 and no Bits Stored (PS3.3 C.7.6.24).
  const floatingPoint = bitsAllocated >= 32 && ds[TAG.bitsStored] === undefined;
  return {
    rows: int(TAG.rows, 0),
    columns: int(TAG.columns, 0),
    samplesPerPixel: int(TAG.samplesPerPixel, 1),
    bitsAllocated,
    bitsStored: int(TAG.bitsStored, bitsAllocated),
    pixelRepresentation: int(TAG.pixelRepresentation, 0),
    planarConfiguration: int(TAG.planar, 0),
    photometricInterpretation: String(first(ds, TAG.photometric) ?? 'MONOCHROME2').trim().toUpperCase(),
    ...(floatingPoint ? { floatingPoint } : {}),
  };
}

/**
 * The presentation of one frame. `frameGroups` are the frame's Per-Frame Functional Groups item
 * and the Shared Functional Groups item (either may be absent); their values win over the top level.
 */
export function readPresentation(ds: DicomJson, frameGroups: Array<DicomJson | undefined> = []): Presentation {
  const scopes = [...frameGroups.map((g) => item(g, TAG.pixelValueTransformation)), ds];
  const voiScopes = [...frameGroups.map((g) => item(g, TAG.frameVoiLut)), ds];
  const pick = (list: Array<DicomJson | undefined>, key: string) => list.find((s) => numbers(s, key).length > 0);
  const rescaleScope = pick(scopes, TAG.rescaleSlope) ?? pick(scopes, TAG.rescaleIntercept);
  const slope = numbers(rescaleScope, TAG.rescaleSlope)[0];
  const intercept = numbers(rescaleScope, TAG.rescaleIntercept)[0];
  const windowScope = pick(voiScopes, TAG.windowCenter);
  const centers = numbers(windowScope, TAG.windowCenter);
  const widths = numbers(windowScope, TAG.windowWidth);
  const fn = voiScopes.map((s) => parseVoiFunction(first(s, TAG.voiFunction) as string | undefined)).find((f) => f !== null);
  return {
    rescaleSlope: slope !== undefined && slope !== 0 ? slope : 1,
    rescaleIntercept: intercept ?? 0,
    windows: centers.slice(0, widths.length).map((center, i) => ({ center, width: widths[i] })),
    voiFunction: fn ?? 'linear',
  };
}

/** True when the header has palette data that is not inline and must be read from the stored header. */
export function paletteNeedsHeader(ds: DicomJson): boolean {
  return PALETTE_TAGS.some((t) => ds[t.data]?.BulkDataURI !== undefined);
}

/**
 * The Palette Color LUT from descriptors (US/SS x3: entries, 0 meaning 65536; first mapped value;
 * bits) and data (OW). `dataOf` supplies a channel's bytes (little endian) when not inline.
 * Segmented palettes (0028,1221-1223) are not supported: null.
 */
export function readPalette(ds: DicomJson, dataOf: (tag: string) => Buffer | undefined): Presentation['palette'] | null {
  const channels: PaletteChannel[] = [];
  for (const t of PALETTE_TAGS) {
    const d = numbers(ds, t.descriptor);
    if (d.length < 3) return null;
    const entries = d[0] === 0 ? 65536 : d[0] < 0 ? d[0] + 65536 : d[0];
    const bytes = inlineBytes(ds[t.data]) ?? dataOf(t.data);
    if (!bytes || bytes.length === 0) return null;
    // 8-bit entries may be packed one per byte (data length == entries) or one per 16-bit word.
    const packed8 = d[2] === 8 && bytes.length < 2 * entries;
    const data = new Uint16Array(packed8 ? bytes.length : Math.floor(bytes.length / 2));
    for (let i = 0; i < data.length; i++) data[i] = packed8 ? bytes[i] : bytes.readUInt16LE(2 * i);
    channels.push({ entries, firstMapped: d[1], bits: d[2], data });
  }
  return { red: channels[0], green: channels[1], blue: channels[2] };
}

function inlineBytes(element: DicomJsonElement | undefined): Buffer | undefined {
  return element?.InlineBinary ? Buffer.from(element.InlineBinary, 'base64') : undefined;
}
