/**
 * De-identification of a DICOM JSON data set (PS3.18 F.2) per the PS3.15 Annex E Basic
 * Application Level Confidentiality Profile and the options a project selects: the engine behind
 * researcher QIDO results and /metadata, and (through deidentify-instance.ts) instance retrieve.
 *
 * Beyond Table E.1-1 (see deidentify-profile.ts for the action codes):
 * - every UI value anywhere is mapped with ctx.mapUid unless it is a well-known UID (prefix
 *   1.2.840.10008.) or names a definition rather than an instance (SOP Class, Transfer Syntax,
 *   Coding Scheme UIDs: CLASS_UID_TAGS), so references inside SR/SEG/KOS stay consistent;
 * - with the modified-dates option every DA/DT value is shifted by the patient's offset, listed
 *   or not (TM values are kept: a shift by whole days leaves the time of day);
 * - sequences are walked recursively: items of sequences whose action is K/U/C/D keep their
 *   structure (D: the content tree is kept as structure but its free text, PN and text values
 *   not listed in the table become dummies: Content Sequence TextValue, Graphic Annotation text);
 *   X removes a sequence and Z empties it (X/Z on a sequence is read as D: see applyAction);
 * - PatientID and PatientName become the PatientKey; Patient's Age over 89 becomes 090Y (when
 *   retained); Patient's Birth Date is Z in Table E.1-1 under every option, so no birth year
 *   that could imply an age over 89 is ever shown;
 * - PatientIdentityRemoved, DeidentificationMethod, DeidentificationMethodCodeSequence (CID 7050)
 *   and LongitudinalTemporalInformationModified are added (PS3.15 E.1.1, PS3.3 C.12.1).
 * Kept elements come back as the same objects (so the instance encoder can copy their bytes).
 */
import type { DeidContext } from '../privacy/privacy-types';
import type { DicomJson, DicomJsonElement } from './types';
import { deidPlanFor, isPrivateTag, type DeidAction, type DeidPlan } from './deidentify-profile';
import { capAge, cleanText, dummyElement, IdentifyingTokens, shiftDate, shiftDateTime } from './deidentify-values';

/** Caller choices for DICOM JSON output. */
export interface DeidentifyJsonOptions {
  /**
   * Rewrites a kept element's BulkDataURI (e.g. to the de-identified study/series/instance path);
   * undefined removes the element. Without it, relative `bulkdata/...` URIs (tag paths only) are
   * kept and any other URI (which may carry original UIDs) removes its element.
   */
  rewriteBulkDataUri?: (uri: string) => string | undefined;
}

/** A private attribute known to be safe (PS3.15 E.3.10): creator, group and element byte (xx in gggg,xxee). */
export interface SafePrivateAttribute {
  creator: string;
  group: number;
  elementByte: number;
}

/**
 * Private attributes the Retain Safe Private Option keeps. Deliberately empty: no vendor
 * attribute has been reviewed for this archive yet, so the option removes every private element
 * (PS3.15 E.3.10 lets the de-identifier decide what it knows to be safe). Add reviewed entries here.
 */
export const SAFE_PRIVATE_ATTRIBUTES: readonly SafePrivateAttribute[] = [];

/** UI attributes that name a definition, not an instance: never mapped (PS3.15 E.3.9 maps instance UIDs). */
export const CLASS_UID_TAGS: ReadonlySet<number> = new Set([
  0x00020002, 0x00020010, 0x00020012, // media storage SOP class, transfer syntax, implementation class
  0x00041510, 0x00041512, 0x0004151a, // referenced SOP class / transfer syntax / related general SOP class in file
  0x00080016, 0x0008001a, 0x0008001b, // SOP class, related general SOP class, original specialized SOP class
  0x00080062, 0x0008010c, 0x0008010d, // SOP classes in study, coding scheme UID, context group extension creator
  0x00080117, 0x00080118, 0x00081150, // context UID, mapping resource, referenced SOP class
  0x0008115a, 0x0008040e, 0x00083002, // SOP classes supported, stored instance / available transfer syntax
  0x00340003, 0x04000010, 0x04000510, // flow, MAC calculation, encrypted content transfer syntax
  0x30100052, 0x30100053, // pertinent SOP classes in study / series
])

const WELL_KNOWN_UID_PREFIX = '1.2.840.10008.';
const TEXT_VRS = new Set('AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT'.split(' '));
const FREE_TEXT_VRS = new Set('LT ST UT UC PN'.split(' '));
const TOKEN_VRS = new Set('PN LO SH AE'.split(' '));
const TAG_PATIENT_AGE = 0x00101010;

/** PS3.16 CID 7050 De-identification Method codes. */
const CID_7050 = {
  basic: ['113100', 'Basic Application Confidentiality Profile'],
  cleanDescriptors: ['113105', 'Clean Descriptors Option'],
  modifiedDates: ['113107', 'Retain Longitudinal Temporal Information Modified Dates Option'],
  patientCharacteristics: ['113108', 'Retain Patient Characteristics Option'],
  deviceIdentity: ['113109', 'Retain Device Identity Option'],
  safePrivate: ['113111', 'Retain Safe Private Option'],
} as const;

interface Run {
  ctx: DeidContext;
  plan: DeidPlan;
  opts: DeidentifyJsonOptions;
  tokens: IdentifyingTokens;
}

/**
 * De-identifies a DICOM JSON data set (PS3.18 F.2) for `ctx` (PS3.15 E.1, Table E.1-1): returns
 * a new data set in tag order; the input is not changed. File Meta (group 0002) and group
 * lengths, Command elements (group 0000) and Data Set Trailing Padding are left out.
 */
export function deidentifyDicomJson(dataset: DicomJson, ctx: DeidContext, opts: DeidentifyJsonOptions = {}): DicomJson {
  const plan = deidPlanFor(ctx.options);
  const run: Run = { ctx, plan, opts, tokens: new IdentifyingTokens() };
  const o = ctx.options;
  if (o.cleanDescriptors || o.retainPatientCharacteristics || o.retainDeviceIdentity) collectTokens(dataset, run);
  const out = deidentifyItem(dataset, run, false);
  for (const [key, element] of Object.entries(methodAttributes(ctx))) out[key] = element;
  return sortByTag(out);
}

/** The attributes that declare what was done (PS3.3 C.12.1 SOP Common: De-identification). */
export function methodAttributes(ctx: DeidContext): DicomJson {
  const o = ctx.options;
  const codes: (readonly [string, string])[] = [CID_7050.basic];
  if (o.retainLongitudinalModifiedDates) codes.push(CID_7050.modifiedDates);
  if (o.retainPatientCharacteristics) codes.push(CID_7050.patientCharacteristics);
  if (o.retainDeviceIdentity) codes.push(CID_7050.deviceIdentity);
  if (o.retainSafePrivate) codes.push(CID_7050.safePrivate);
  if (o.cleanDescriptors) codes.push(CID_7050.cleanDescriptors);
  return {
    '00120062': { vr: 'CS', Value: ['YES'] },
    '00120063': { vr: 'LO', Value: codes.map(([, meaning]) => meaning) },
    '00120064': {
      vr: 'SQ',
      Value: codes.map(([value, meaning]) => ({
        '00080100': { vr: 'SH', Value: [value] },
        '00080102': { vr: 'SH', Value: ['DCM'] },
        '00080104': { vr: 'LO', Value: [meaning] },
      })),
    },
    '00280303': { vr: 'CS', Value: [o.retainLongitudinalModifiedDates ? 'MODIFIED' : 'REMOVED'] },
  };
}

function sortByTag(ds: DicomJson): DicomJson {
  const sorted: DicomJson = {};
  for (const key of Object.keys(ds).sort()) sorted[key] = ds[key];
  return sorted;
}

function deidentifyItem(ds: DicomJson, run: Run, structured: boolean): DicomJson {
  const out: DicomJson = {};
  for (const key of Object.keys(ds).sort()) {
    const tag = parseInt(key, 16) >>> 0;
    if (!(tag >= 0)) continue;
    // Command (0000) and File Meta (0002) elements do not belong in a data set (PS3.5 7.1, PS3.7 E.1).
    const group = tag >>> 16;
    if (group === 0x0000 || group === 0x0002 || (tag & 0xffff) === 0 || tag === 0xfffcfffc) continue;
    const element = ds[key];
    // Malformed elements (no VR, a Value that is not an array) are dropped: when in doubt, remove.
    if (!element || typeof element !== 'object' || typeof element.vr !== 'string') continue;
    if (element.Value !== undefined && !Array.isArray(element.Value)) continue;
    let action = run.plan.actionOf(tag);
    if (action === 'safe-private') action = isSafePrivate(ds, tag) ? 'keep' : 'remove';
    if (action === undefined && structured) {
      if (FREE_TEXT_VRS.has(element.vr)) action = 'dummy';
      else if (element.vr === 'UN') action = 'remove'; // opaque bytes inside structured content: when in doubt, drop
    }
    const result = applyAction(element, action, tag, run, structured);
    if (result) out[key] = result;
  }
  return out;
}

function applyAction(el: DicomJsonElement, action: DeidAction | undefined, tag: number, run: Run, structured: boolean): DicomJsonElement | undefined {
  const vr = el.vr;
  if (vr === 'SQ') {
    if (action === 'remove') return undefined;
    if (action === 'patient-key') return { vr: 'SQ' };
    // Z alone (a Type 2 sequence) empties it. X/Z: an empty Type 3 sequence is invalid and a
    // removed Type 2 one too, so the items are kept as de-identified structured content (as D).
    if (action === 'empty') return run.plan.rowOf(tag)?.basicProfile.trim() === 'Z' ? { vr: 'SQ' } : mapItems(el, run, true);
    return mapItems(el, run, structured || action === 'dummy');
  }
  if (vr === 'UI' && action !== 'remove' && action !== 'empty') return mapUids(el, tag, run);
  switch (action) {
    case 'remove':
      return undefined;
    case 'empty':
      return { vr };
    case 'patient-key':
      if (vr === 'PN') return { vr, Value: [{ Alphabetic: run.ctx.patient.patientKey }] };
      return { vr, Value: [run.ctx.patient.patientKey] };
    case 'dummy':
      if (!hasValue(el)) return { vr };
      return dummyElement(vr);
    case 'shift':
      return shiftElement(el, run, tag);
    case 'clean':
      return cleanElement(el, run);
    case 'uid':
      // A U row met with another VR (a writer's mistake): text is mapped like a UID, anything else removed.
      return TEXT_VRS.has(vr) ? mapStrings(el, (v) => (v.trim() === '' ? null : run.ctx.mapUid(v.trim()))) : undefined;
    case 'keep':
    case undefined:
    default:
      return keepElement(el, run, tag);
  }
}

function hasValue(el: DicomJsonElement): boolean {
  return (el.Value !== undefined && el.Value.length > 0) || el.InlineBinary !== undefined || el.BulkDataURI !== undefined;
}

function mapItems(el: DicomJsonElement, run: Run, structured: boolean): DicomJsonElement {
  if (!el.Value || el.Value.length === 0) return { vr: 'SQ' };
  const items = el.Value.map((item) => (item && typeof item === 'object' ? deidentifyItem(item as DicomJson, run, structured) : {}));
  return { vr: 'SQ', Value: items };
}

/** UIDs: mapped unless well known (PS3.15 E.3.9; PS3.5 9: the 1.2.840.10008 root is the standard's own). */
function mapUids(el: DicomJsonElement, tag: number, run: Run): DicomJsonElement {
  if (!el.Value || CLASS_UID_TAGS.has(tag)) return el.BulkDataURI || el.InlineBinary ? { vr: el.vr } : el;
  return {
    vr: el.vr,
    Value: el.Value.map((v) => (typeof v === 'string' && v !== '' && !v.startsWith(WELL_KNOWN_UID_PREFIX) ? run.ctx.mapUid(v) : v)),
  };
}

function keepElement(el: DicomJsonElement, run: Run, tag: number): DicomJsonElement | undefined {
  const vr = el.vr;
  if (run.ctx.options.retainLongitudinalModifiedDates && (vr === 'DA' || vr === 'DT')) return shiftElement(el, run, tag);
  if (tag === TAG_PATIENT_AGE && el.Value) return mapStrings(el, (v) => capAge(v));
  if (el.BulkDataURI !== undefined) {
    const rewrite = run.opts.rewriteBulkDataUri;
    const uri = rewrite ? rewrite(el.BulkDataURI) : el.BulkDataURI.startsWith('bulkdata/') ? el.BulkDataURI : undefined;
    if (uri === undefined) return undefined;
    return uri === el.BulkDataURI ? el : { vr, BulkDataURI: uri };
  }
  return el;
}

/** Modified dates (PS3.15 E.3.6): DA and DT shifted by the patient's offset; TM kept; other VRs get their basic action. */
function shiftElement(el: DicomJsonElement, run: Run, tag: number): DicomJsonElement | undefined {
  const days = run.ctx.patient.dateOffsetDays;
  if (el.vr === 'DA') return mapStrings(el, (v) => shiftDate(v, days));
  if (el.vr === 'DT') return mapStrings(el, (v) => shiftDateTime(v, days));
  if (el.vr === 'TM') return el;
  const row = run.plan.rowOf(tag);
  const fallback = row ? ({ X: 'remove', Z: 'empty', D: 'dummy', K: 'keep', U: 'uid', C: 'clean' } as Record<string, DeidAction>)[row.basicProfile] ?? 'remove' : 'remove';
  return fallback === 'keep' ? el : applyAction(el, fallback, -1, run, false);
}

/** Clean (PS3.15 E.3.11): text kept without identifying words; dates shifted when allowed; anything else emptied. */
function cleanElement(el: DicomJsonElement, run: Run): DicomJsonElement | undefined {
  const vr = el.vr;
  if (!el.Value) return { vr };
  if (vr === 'DA' || vr === 'DT') return run.ctx.options.retainLongitudinalModifiedDates ? shiftElement(el, run, -1) : { vr };
  if (vr === 'PN') {
    const values = el.Value.map((v) => {
      if (!v || typeof v !== 'object') return null;
      const cleaned = cleanText(Object.values(v as Record<string, string>).join(' '), run.tokens);
      return cleaned ? { Alphabetic: cleaned } : null;
    });
    return values.some((v) => v !== null) ? { vr, Value: values } : { vr };
  }
  if (!TEXT_VRS.has(vr) || vr === 'DS' || vr === 'IS' || vr === 'TM' || vr === 'AS') return { vr };
  return mapStrings(el, (v) => cleanText(v, run.tokens) || null);
}

/** Applies `f` to each string value; null drops a value; an element left with no value becomes empty. */
function mapStrings(el: DicomJsonElement, f: (v: string) => string | null): DicomJsonElement {
  if (!el.Value) return { vr: el.vr };
  const values = el.Value.map((v) => (typeof v === 'string' ? f(v) : null));
  if (values.every((v) => v === null || v === '')) return { vr: el.vr };
  return { vr: el.vr, Value: values };
}

/** Private elements kept by Retain Safe Private: listed in SAFE_PRIVATE_ATTRIBUTES under their creator (PS3.5 7.8.1). */
function isSafePrivate(ds: DicomJson, tag: number): boolean {
  if (SAFE_PRIVATE_ATTRIBUTES.length === 0 || !isPrivateTag(tag)) return false;
  const group = tag >>> 16;
  const element = tag & 0xffff;
  if (element >= 0x10 && element <= 0xff) {
    const creator = firstString(ds[tagKeyOf((group << 16) | element)]);
    return SAFE_PRIVATE_ATTRIBUTES.some((s) => s.group === group && s.creator === creator);
  }
  if (element < 0x1000) return false;
  const creator = firstString(ds[tagKeyOf((group << 16) | (element >> 8))]);
  return SAFE_PRIVATE_ATTRIBUTES.some((s) => s.group === group && s.creator === creator && s.elementByte === (element & 0xff));
}

function tagKeyOf(tag: number): string {
  return (tag >>> 0).toString(16).toUpperCase().padStart(8, '0');
}

function firstString(el: DicomJsonElement | undefined): string | undefined {
  const v = el?.Value?.[0];
  return typeof v === 'string' ? v.trim() : undefined;
}

/** Words of the values the profile removes or replaces (names, IDs, addresses ...), for Clean Descriptors. */
function collectTokens(ds: DicomJson, run: Run): void {
  for (const [key, el] of Object.entries(ds)) {
    if (!el || typeof el !== 'object' || (el.Value !== undefined && !Array.isArray(el.Value))) continue;
    if (el.vr === 'SQ') {
      for (const item of el.Value ?? []) if (item && typeof item === 'object') collectTokens(item as DicomJson, run);
      continue;
    }
    if (!TOKEN_VRS.has(el.vr) || !el.Value) continue;
    const tag = parseInt(key, 16) >>> 0;
    const action = run.plan.actionOf(tag);
    if (action === undefined || action === 'keep' || action === 'clean' || action === 'shift') continue;
    for (const v of el.Value) {
      if (typeof v === 'string') run.tokens.add(v);
      else if (v && typeof v === 'object') run.tokens.add(Object.values(v as Record<string, string>).join(' '));
    }
  }
}
