/**
 * A generated DICOM instance full of fake PHI, for de-identification tests (PS3.15 Annex E):
 * Explicit VR Little Endian, an 8x8 8-bit native image, and EVERY attribute of Table E.1-1 that
 * can be represented (pattern rows expanded: curve group 5000, overlay group 6000, private group
 * 0009 of an unknown creator), each holding a value that carries `PHI_SENTINEL` where its VR can
 * carry text; dates, times and numbers carry distinctive values (19230417, 071513.250, 271828.18,
 * 314159, 4242, ...). Sequences get an item that carries sentinel attributes too (one nesting
 * level deeper for Referenced Image Sequence), and UIDs are distinctive originals
 * (1.2.826.0.1.3680043.10.999.*) that must not survive.
 *
 * Nothing here is real PHI. Returns the Part 10 bytes, the same data set as DICOM JSON, and a
 * description of what was put where.
 */
import { buildFileMeta } from '../../src/dicomweb/wado-rs';
import { loadConfidentialityProfile, concreteTag, type ProfileRow } from '../../src/dicom/deidentify-profile';
import { elementHeader, encodeValue } from '../../src/dicom/transcode-header';
import { lookupDictionaryVr } from '../../src/dicom/value-representation';
import type { DicomJson, DicomJsonElement } from '../../src/dicom/types';

/** The text every sentinel value carries. */
export const PHI_SENTINEL = 'PHI_SENTINEL';
/** Distinctive non-text sentinels: what to search the output bytes for. */
export const SENTINEL_DATE = '19230417';
export const SENTINEL_TIME = '071513.250';
export const SENTINEL_DATETIME = `${SENTINEL_DATE}071513.250`;
export const SENTINEL_DS = '271828.18';
export const SENTINEL_IS = '314159';
export const SENTINEL_AGE = '095Y';
export const SENTINEL_NUMBER = 4242;
/** Root of the generated original UIDs. */
export const SENTINEL_UID_ROOT = '1.2.826.0.1.3680043.10.999';

/** One attribute the generator placed. */
export interface SentinelEntry {
  /** Path of DICOM JSON keys, e.g. ['00100010'] or ['00081140', '0', '00080080']. */
  path: string[];
  tag: number;
  vr: string;
  /** The Table E.1-1 row the attribute stands for (undefined for structural helpers). */
  row?: ProfileRow;
  /** The JSON element as generated. */
  element: DicomJsonElement;
  /** Where it lives: the File Meta, the data set, or after the Pixel Data. */
  place: 'meta' | 'dataset' | 'after-pixel-data';
}

/** The generated instance. */
export interface PhiSentinelInstance {
  bytes: Buffer;
  /** The data set as DICOM JSON (without File Meta; with the elements stored after Pixel Data). */
  json: DicomJson;
  entries: SentinelEntry[];
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  /** The native pixel bytes, exactly as stored. */
  pixelData: Buffer;
}

export interface PhiSentinelOptions {
  /** Distinguishes the UIDs of several generated instances (default 1). */
  instanceNumber?: number;
  studyInstanceUID?: string;
  seriesInstanceUID?: string;
  /** A SOP Instance UID put in Referenced Image Sequence (e.g. another generated instance's). */
  referencedSopInstanceUID?: string;
}

const SECONDARY_CAPTURE = '1.2.840.10008.5.1.4.1.1.7';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const ITEM = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
const ITEM_END = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0x00, 0x00, 0x00, 0x00]);
const SEQUENCE_END = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0x00, 0x00, 0x00, 0x00]);

function key(tag: number): string {
  return (tag >>> 0).toString(16).toUpperCase().padStart(8, '0');
}

/** The sentinel text of one attribute: PHI_SENTINEL and the tag, so each value is findable. */
export function sentinelText(tag: number): string {
  return `${PHI_SENTINEL}_${key(tag)}`;
}

/** A sentinel value of `vr` for `tag` as a DICOM JSON element. */
export function sentinelElement(tag: number, vr: string, uid: () => string): DicomJsonElement {
  switch (vr) {
    case 'PN': return { vr, Value: [{ Alphabetic: `${sentinelText(tag)}^${PHI_SENTINEL}` }] };
    case 'DA': return { vr, Value: [SENTINEL_DATE] };
    case 'TM': return { vr, Value: [SENTINEL_TIME] };
    case 'DT': return { vr, Value: [SENTINEL_DATETIME] };
    case 'DS': return { vr, Value: [Number(SENTINEL_DS)] };
    case 'IS': return { vr, Value: [Number(SENTINEL_IS)] };
    case 'AS': return { vr, Value: [SENTINEL_AGE] };
    case 'UI': return { vr, Value: [uid()] };
    case 'US': case 'SS': case 'UL': case 'SL': return { vr, Value: [SENTINEL_NUMBER] };
    case 'FL': case 'FD': return { vr, Value: [SENTINEL_NUMBER + 0.5] };
    case 'UR': return { vr, Value: [`http://phi-sentinel.invalid/${sentinelText(tag)}`] };
    case 'OB': case 'OW': case 'UN': case 'OD': case 'OF': case 'OL': case 'OV':
      return { vr, InlineBinary: Buffer.from(`${sentinelText(tag)} `).toString('base64') };
    case 'AT': return { vr, Value: ['00100010'] };
    default: return { vr, Value: [`${sentinelText(tag)} free text`] };
  }
}

function dictionaryVr(tag: number): string {
  const vr = lookupDictionaryVr(tag) ?? 'UN';
  if (vr === 'ox' || vr === 'lt') return 'OW';
  if (vr === 'xs') return 'US';
  return vr;
}

/** Builds the sentinel instance (see the file comment). */
export function buildPhiSentinelInstance(options: PhiSentinelOptions = {}): PhiSentinelInstance {
  const n = options.instanceNumber ?? 1;
  let counter = 0;
  const uid = (): string => `${SENTINEL_UID_ROOT}.${n}.${++counter}`;
  const studyInstanceUID = options.studyInstanceUID ?? `${SENTINEL_UID_ROOT}.${n}.1000`;
  const seriesInstanceUID = options.seriesInstanceUID ?? `${SENTINEL_UID_ROOT}.${n}.2000`;
  const sopInstanceUID = `${SENTINEL_UID_ROOT}.${n}.3000`;
  const entries: SentinelEntry[] = [];
  const json: DicomJson = {};
  const after: DicomJson = {};

  /** An item of sentinel attributes (Table E.1-1 rows), nested `depth` more levels. */
  const sentinelItem = (path: string[], depth: number): DicomJson => {
    const item: DicomJson = {};
    const put = (tag: number, vr: string, element: DicomJsonElement) => {
      item[key(tag)] = element;
      entries.push({ path: [...path, key(tag)], tag, vr, element, place: 'dataset', row: rowByTag.get(tag) });
    };
    put(0x00080080, 'LO', sentinelElement(0x00080080, 'LO', uid)); // Institution Name, X/Z/D
    put(0x00081150, 'UI', { vr: 'UI', Value: [SECONDARY_CAPTURE] }); // Referenced SOP Class UID, a class: kept
    put(0x00081155, 'UI', { vr: 'UI', Value: [options.referencedSopInstanceUID ?? uid()] }); // Referenced SOP Instance UID, U
    put(0x00080020, 'DA', sentinelElement(0x00080020, 'DA', uid)); // Study Date
    put(0x00081070, 'PN', sentinelElement(0x00081070, 'PN', uid)); // Operators' Name
    if (depth > 0) {
      const inner = sentinelItem([...path, '00082112', '0'], depth - 1);
      put(0x00082112, 'SQ', { vr: 'SQ', Value: [inner] }); // Source Image Sequence, X/Z/U*
    }
    return item;
  };

  const rows = loadConfidentialityProfile();
  const rowByTag = new Map<number, ProfileRow>();
  for (const row of rows) {
    const tag = concreteTag(row);
    if (tag !== null) rowByTag.set(tag, row);
  }
  for (const row of rows) {
    let tag = concreteTag(row);
    let vr: string;
    if (tag === null) {
      const pattern = row.tag.toUpperCase();
      if (pattern.startsWith('(50XX')) { tag = 0x50003000; vr = 'OB'; }
      else if (pattern.startsWith('(60XX,3000')) { tag = 0x60003000; vr = 'OW'; }
      else if (pattern.startsWith('(60XX,4000')) { tag = 0x60004000; vr = 'LT'; }
      else continue; // private: below
    } else if (tag >>> 16 === 0x0004 || tag >>> 16 === 0x0000) {
      // Directory Information (PS3.3 F.3) lives only in a DICOMDIR, Command elements (PS3.7 E.1)
      // only in a DIMSE message: neither can be represented in a composite instance.
      continue;
    } else {
      vr = dictionaryVr(tag);
    }
    const path = [key(tag)];
    let element: DicomJsonElement;
    if (vr === 'SQ') {
      const item = sentinelItem([key(tag), '0'], tag === 0x00081140 ? 1 : 0);
      if (tag === 0x0040a730) {
        // Content Sequence (D): a TEXT content item whose TextValue is not in the table.
        item['0040A040'] = { vr: 'CS', Value: ['TEXT'] };
        item['0040A010'] = { vr: 'CS', Value: ['CONTAINS'] };
        item['0040A160'] = { vr: 'UT', Value: [`${PHI_SENTINEL} report text`] };
        entries.push({ path: [key(tag), '0', '0040A160'], tag: 0x0040a160, vr: 'UT', element: item['0040A160'], place: 'dataset' });
      }
      element = { vr, Value: [item] };
    } else if (tag === 0x0020000d) element = { vr, Value: [studyInstanceUID] };
    else if (tag === 0x0020000e) element = { vr, Value: [seriesInstanceUID] };
    else if (tag === 0x00080018 || tag === 0x00020003) element = { vr, Value: [sopInstanceUID] };
    else if (tag === 0x00081155 && options.referencedSopInstanceUID) element = { vr, Value: [options.referencedSopInstanceUID] };
    else element = sentinelElement(tag, vr, uid);
    const place: SentinelEntry['place'] = tag >>> 16 === 0x0002 ? 'meta' : tag >= 0x7fe00010 ? 'after-pixel-data' : 'dataset';
    entries.push({ path, tag, vr, element, place, row });
    if (place === 'dataset') json[key(tag)] = element;
    else if (place === 'after-pixel-data') after[key(tag)] = element;
  }
  // Private attributes of an unknown creator (PS3.5 7.8.1): creator, text, raw bytes, a sequence.
  const privateRow = rows.find((r) => r.tag.startsWith('(GGGG'));
  const privates: Array<[number, DicomJsonElement]> = [
    [0x00090010, { vr: 'LO', Value: [`${PHI_SENTINEL} CREATOR`] }],
    [0x00091001, { vr: 'LO', Value: [sentinelText(0x00091001)] }],
    [0x00091002, { vr: 'UN', InlineBinary: Buffer.from(`${sentinelText(0x00091002)} `).toString('base64') }],
    [0x00091003, { vr: 'SQ', Value: [{ '00100010': { vr: 'PN', Value: [{ Alphabetic: `${PHI_SENTINEL}^PRIVATE` }] } }] }],
  ];
  for (const [tag, element] of privates) {
    json[key(tag)] = element;
    entries.push({ path: [key(tag)], tag, vr: element.vr, element, place: 'dataset', row: privateRow });
  }
  // The image: structural attributes not in the table.
  const structural: Array<[number, DicomJsonElement]> = [
    [0x00080016, { vr: 'UI', Value: [SECONDARY_CAPTURE] }],
    [0x00080060, { vr: 'CS', Value: ['OT'] }],
    // A UID Table E.1-1 does not list (SOP Instance UID of Concatenation Source): mapped all the same.
    [0x00200242, { vr: 'UI', Value: [`${SENTINEL_UID_ROOT}.${n}.4000`] }],
    [0x00080064, { vr: 'CS', Value: ['WSD'] }],
    [0x00280002, { vr: 'US', Value: [1] }],
    [0x00280004, { vr: 'CS', Value: ['MONOCHROME2'] }],
    [0x00280010, { vr: 'US', Value: [8] }],
    [0x00280011, { vr: 'US', Value: [8] }],
    [0x00280100, { vr: 'US', Value: [8] }],
    [0x00280101, { vr: 'US', Value: [8] }],
    [0x00280102, { vr: 'US', Value: [7] }],
    [0x00280103, { vr: 'US', Value: [0] }],
  ];
  for (const [tag, element] of structural) json[key(tag)] = element;

  const pixelData = Buffer.alloc(64);
  for (let i = 0; i < 64; i++) pixelData[i] = (i * 4 + 3) & 0xff;
  const meta = buildFileMeta({ sopClassUID: SECONDARY_CAPTURE, sopInstanceUID, transferSyntaxUID: EXPLICIT_LE });
  const bytes = Buffer.concat([
    meta,
    encodeJson(json),
    elementHeader(0x7fe00010, 'OB', pixelData.length),
    pixelData,
    encodeJson(after),
  ]);
  const all: DicomJson = {};
  for (const k of Object.keys({ ...json, ...after }).sort()) all[k] = json[k] ?? after[k];
  return { bytes, json: all, entries, studyInstanceUID, seriesInstanceUID, sopInstanceUID, sopClassUID: SECONDARY_CAPTURE, pixelData };
}

/** Explicit VR Little Endian encoding of generated DICOM JSON (sequences of undefined length). */
function encodeJson(ds: DicomJson): Buffer {
  const parts: Buffer[] = [];
  for (const k of Object.keys(ds).sort()) {
    const tag = parseInt(k, 16) >>> 0;
    const el = ds[k];
    if (el.vr === 'SQ') {
      parts.push(elementHeader(tag, 'SQ', 0xffffffff));
      for (const item of el.Value ?? []) parts.push(ITEM, encodeJson(item as DicomJson), ITEM_END);
      parts.push(SEQUENCE_END);
      continue;
    }
    parts.push(...encodeValue(tag, el.vr, valueOf(el)));
  }
  return Buffer.concat(parts);
}

function valueOf(el: DicomJsonElement): Buffer {
  if (el.InlineBinary !== undefined) return Buffer.from(el.InlineBinary, 'base64');
  const values = el.Value ?? [];
  switch (el.vr) {
    case 'US': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(2); b.writeUInt16LE(Number(v)); return b; }));
    case 'SS': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(2); b.writeInt16LE(Number(v)); return b; }));
    case 'UL': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeUInt32LE(Number(v)); return b; }));
    case 'SL': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeInt32LE(Number(v)); return b; }));
    case 'FL': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeFloatLE(Number(v)); return b; }));
    case 'FD': return Buffer.concat(values.map((v) => { const b = Buffer.alloc(8); b.writeDoubleLE(Number(v)); return b; }));
    case 'AT': return Buffer.concat(values.map((v) => { const n = parseInt(String(v), 16); const b = Buffer.alloc(4); b.writeUInt16LE(n >>> 16); b.writeUInt16LE(n & 0xffff, 2); return b; }));
    case 'PN': return Buffer.from(values.map((v) => (v as { Alphabetic: string }).Alphabetic).join('\\'), 'latin1');
    default: return Buffer.from(values.map(String).join('\\'), 'latin1');
  }
}
