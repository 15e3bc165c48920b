/**
 * The PS3.15 Annex E Basic Application Level Confidentiality Profile as data: Table E.1-1
 * (conformance/dicom/confidentiality-profile.json, all 621 rows) resolved, once per option set,
 * into a tag -> action lookup.
 *
 * Action codes (PS3.15 E.1.1): D dummy of the same VR, Z zero length, X remove, K keep, C clean,
 * U UID replaced by ctx.mapUid. Combined codes (X/Z, X/D, X/Z/D, Z/D) leave the choice to the
 * attribute's Type in the IOD, which we do not know for an arbitrary data set. Every alternative
 * discards the original value, so they protect equally; we pick the one that stays conformant
 * whatever the Type: X/Z -> Z (an empty Type 2 or Type 3 attribute is valid), X/D, X/Z/D, Z/D -> D
 * (a dummy satisfies Type 1). X/Z/U* (Referenced Image / Source Image Sequence) -> U: the
 * sequence keeps its structure and the UIDs inside are mapped, so references still resolve.
 *
 * Option columns (PS3.15 E.3) mapped onto DeidOptions: rtnLongModifDatesOpt (C: dates shifted
 * by the patient's offset, times kept), rtnPatCharsOpt, rtnDevIdOpt (K keep, C clean),
 * rtnSafePrivOpt (safe private list), cleanDescOpt (C clean). rtnUIDsOpt, rtnLongFullDatesOpt,
 * rtnInstIdOpt, cleanStructContOpt and cleanGraphOpt are never selected. When several selected
 * options name a row: a date shift wins (the value is a date), then K, then C.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { DeidOptions } from '../privacy/privacy-types';

/** Path of the profile table, relative to the package root (same from src/ and dist/). */
export const CONFIDENTIALITY_PROFILE_PATH = path.resolve(__dirname, '../../conformance/dicom/confidentiality-profile.json');

/** One row of PS3.15 Table E.1-1 as stored. */
export interface ProfileRow {
  name: string;
  /** As printed: `(0010,0010)`, `(50XX,XXXX)`, `(GGGG,EEEE) WHERE GGGG IS ODD`. */
  tag: string;
  basicProfile: string;
  rtnLongModifDatesOpt?: string;
  rtnPatCharsOpt?: string;
  rtnDevIdOpt?: string;
  rtnSafePrivOpt?: string;
  cleanDescOpt?: string;
  [column: string]: string | undefined;
}

/**
 * What happens to an element: PS3.15 E.1.1 codes resolved for one option set, plus the
 * behaviours the profile text adds: `shift` (E.3.6 modified dates; times kept), `patient-key`
 * (PatientID and PatientName become the PatientKey), `safe-private` (E.3.10).
 */
export type DeidAction = 'remove' | 'empty' | 'dummy' | 'keep' | 'clean' | 'uid' | 'shift' | 'patient-key' | 'safe-private';

/** A resolved table: the action of every listed tag, and of the pattern rows. */
export interface DeidPlan {
  /** Action of a concrete tag, or undefined when Table E.1-1 does not list it (kept; UIDs still mapped). */
  actionOf(tag: number): DeidAction | undefined;
  /** The row a tag falls under (for tests and diagnostics). */
  rowOf(tag: number): ProfileRow | undefined;
}

const TAG_PATIENT_NAME = 0x00100010;
const TAG_PATIENT_ID = 0x00100020;

let rowsCache: ProfileRow[] | null = null;
const planCache = new Map<string, DeidPlan>();

/** The 621 rows of PS3.15 Table E.1-1, read on first use. */
export function loadConfidentialityProfile(): readonly ProfileRow[] {
  rowsCache ??= JSON.parse(readFileSync(CONFIDENTIALITY_PROFILE_PATH, 'utf8')) as ProfileRow[];
  return rowsCache;
}

/** A row's concrete tag, or null for the pattern rows (curves, overlays, private). */
export function concreteTag(row: ProfileRow): number | null {
  const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(row.tag.trim());
  return m ? parseInt(m[1] + m[2], 16) >>> 0 : null;
}

/** The PS3.15 E.1.1 reading of a basic-profile code (combined codes resolved as documented above). */
export function basicAction(code: string): DeidAction {
  switch (code.trim()) {
    case 'X': return 'remove';
    case 'Z': case 'X/Z': return 'empty';
    case 'D': case 'X/D': case 'X/Z/D': case 'Z/D': return 'dummy';
    case 'K': return 'keep';
    case 'C': return 'clean';
    case 'U': case 'X/Z/U*': case 'X/Z/U': return 'uid';
    default: return 'remove'; // an unknown code: when in doubt, remove
  }
}

/** The action of one row under `options` (PS3.15 E.3 option columns). */
export function resolveRowAction(row: ProfileRow, options: DeidOptions): DeidAction {
  if (row.tag.startsWith('(GGGG')) return options.retainSafePrivate && row.rtnSafePrivOpt ? 'safe-private' : 'remove';
  if (options.retainLongitudinalModifiedDates && row.rtnLongModifDatesOpt) return 'shift';
  const selected: string[] = [];
  if (options.retainPatientCharacteristics && row.rtnPatCharsOpt) selected.push(row.rtnPatCharsOpt);
  if (options.retainDeviceIdentity && row.rtnDevIdOpt) selected.push(row.rtnDevIdOpt);
  if (options.cleanDescriptors && row.cleanDescOpt) selected.push(row.cleanDescOpt);
  if (selected.includes('K')) return 'keep';
  if (selected.includes('C')) return 'clean';
  return basicAction(row.basicProfile);
}

/** True for the repeating curve groups (50xx,xxxx), PS3.3 C.10 (retired). */
export function isCurveTag(tag: number): boolean {
  const group = tag >>> 16;
  return group >= 0x5000 && group <= 0x501e && (group & 1) === 0;
}

/** True for the repeating overlay groups (60xx,xxxx), PS3.3 C.9. */
export function isOverlayTag(tag: number): boolean {
  const group = tag >>> 16;
  return group >= 0x6000 && group <= 0x601e && (group & 1) === 0;
}

/** True for private elements (odd group, PS3.5 7.8), including the illegal groups 0001-0007 and FFFF. */
export function isPrivateTag(tag: number): boolean {
  return ((tag >>> 16) & 1) === 1;
}

function optionsKey(o: DeidOptions): string {
  return [o.retainLongitudinalModifiedDates, o.retainPatientCharacteristics, o.retainDeviceIdentity, o.retainSafePrivate, o.cleanDescriptors]
    .map((b) => (b ? '1' : '0'))
    .join('');
}

/**
 * The resolved table for an option set, built once and cached (there are 32 option sets).
 * Curves: every (50xx,eeee) follows the Curve Data row. Overlays: Overlay Data and Overlay
 * Comments follow their rows, and the other elements of an overlay group are removed with them
 * (an overlay without its data is not a valid overlay, PS3.3 C.9.2).
 */
export function deidPlanFor(options: DeidOptions): DeidPlan {
  const key = optionsKey(options);
  const cached = planCache.get(key);
  if (cached) return cached;
  const rows = loadConfidentialityProfile();
  const byTag = new Map<number, { row: ProfileRow; action: DeidAction }>();
  let curve: { row: ProfileRow; action: DeidAction } | undefined;
  let overlayData: { row: ProfileRow; action: DeidAction } | undefined;
  let overlayComments: { row: ProfileRow; action: DeidAction } | undefined;
  let privateRow: { row: ProfileRow; action: DeidAction } | undefined;
  for (const row of rows) {
    const entry = { row, action: resolveRowAction(row, options) };
    const tag = concreteTag(row);
    if (tag !== null) {
      byTag.set(tag, entry);
      continue;
    }
    const pattern = row.tag.toUpperCase();
    if (pattern.startsWith('(50XX')) curve = entry;
    else if (pattern.startsWith('(60XX,3000')) overlayData = entry;
    else if (pattern.startsWith('(60XX,4000')) overlayComments = entry;
    else if (pattern.startsWith('(GGGG')) privateRow = entry;
  }
  // PS3.15 E.1.1 and the issue: PatientID and PatientName carry the pseudonym, whatever the row says.
  for (const tag of [TAG_PATIENT_NAME, TAG_PATIENT_ID]) {
    const entry = byTag.get(tag);
    if (entry) byTag.set(tag, { row: entry.row, action: 'patient-key' });
  }
  const find = (tag: number): { row: ProfileRow; action: DeidAction } | undefined => {
    const exact = byTag.get(tag);
    if (exact) return exact;
    if (isPrivateTag(tag)) return privateRow;
    if (isCurveTag(tag)) return curve;
    if (isOverlayTag(tag)) {
      const element = tag & 0xffff;
      if (element === 0x3000) return overlayData;
      if (element === 0x4000) return overlayComments;
      return overlayData && { row: overlayData.row, action: 'remove' };
    }
    return undefined;
  };
  const plan: DeidPlan = {
    actionOf: (tag) => find(tag)?.action,
    rowOf: (tag) => find(tag)?.row,
  };
  planCache.set(key, plan);
  return plan;
}
