/**
 * Query/Retrieve over DIMSE (PS3.4 Annex C): C-FIND answered by the QIDO-RS search over the same
 * index, and the outbound association a C-MOVE sends its instances over. The listener (dimse-listener.ts) does the messaging and the audit.
 */
import type tls from 'node:tls';
import { Dataset } from 'dcmjs-dimse';
import type { DicomJson } from '../dicom/types';
import type { StoredInstance, StudyRestriction } from '../db/wado-index';
import { prepareSearch, searchForInstances, searchForSeries, searchForStudies, type SearchServices } from '../dicomweb/qido-rs';
import { MAX_LIMIT } from '../dicomweb/query-params';
import { HttpError } from '../http/errors';
import { IdentifierError, patientKeyOf, patientSearchOf, responseIdentifier, type ParsedQuery } from './query';
import { openAssociation, type OutboundAssociation, type ProposedContext, type ReachablePeer } from './outbound-association';
import { proposedSyntaxes } from './sub-operations';

// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DicomMetaDictionary } = require('dcmjs').data as { DicomMetaDictionary: { naturalizeDataset(d: unknown): Record<string, unknown>; denaturalizeDataset(d: unknown): DicomJson } };

/** Matches read per search page. */
const PAGE = MAX_LIMIT;
/** Responses sent between two looks for a C-CANCEL. */
const CANCEL_CHECK_EVERY = 64;
/** Studies a Patient level C-FIND groups at most (the answer is then cut short with a warning status). */
const MAX_PATIENT_STUDIES = 100_000;

/** A C-FIND/C-GET/C-MOVE identifier (the request's data set) as DICOM JSON. */
export function identifierOf(dataset: Dataset | undefined): DicomJson {
  if (!dataset) throw new IdentifierError(0xa900, 'the request carries no identifier');
  try {
    return DicomMetaDictionary.denaturalizeDataset(dataset.getElements());
  } catch (err) {
    throw new IdentifierError(0xc000, `the identifier cannot be read: ${(err as Error).message}`);
  }
}

/** A response identifier as a data set in the context's transfer syntax. */
export function datasetOf(identifier: DicomJson, transferSyntaxUID: string): Dataset {
  return new Dataset(DicomMetaDictionary.naturalizeDataset(identifier), transferSyntaxUID);
}

/** What a C-FIND search runs with. */
export interface FindContext {
  search: SearchServices;
  restrictStudies?: StudyRestriction;
  dicomwebBaseUrl: string;
  aeTitle: string;
  /** True once the requester sent C-CANCEL. */
  cancelled(): boolean;
}

/** Checks a query's values before anything runs: a malformed one is a C000 with the reason. */
export function checkQuery(parsed: ParsedQuery): void {
  const level = parsed.level === 'IMAGE' ? 'instance' : parsed.level === 'SERIES' ? 'series' : 'study';
  const query = parsed.level === 'PATIENT' ? patientSearchOf(parsed) : parsed.query;
  try {
    prepareSearch(level, { query, dicomwebBaseUrl: '' });
  } catch (err) {
    if (err instanceof HttpError) throw new IdentifierError(0xc000, err.message);
    throw err;
  }
}

/**
 * Runs a C-FIND: each match becomes a response identifier handed to `emit`, page by page.
 * Resolves 'cancelled' when the requester cancelled between pages, 'truncated' when a Patient
 * level search met its bound.
 */
export async function runFind(ctx: FindContext, parsed: ParsedQuery, emit: (identifier: DicomJson) => void): Promise<'done' | 'cancelled' | 'truncated'> {
  const options = { restrictStudies: ctx.restrictStudies };
  if (parsed.level === 'PATIENT') return runPatientFind(ctx, parsed, emit);
  const search = parsed.level === 'STUDY' ? searchForStudies : parsed.level === 'SERIES' ? searchForSeries : searchForInstances;
  for (let offset = 0; ; offset += PAGE) {
    if (ctx.cancelled()) return 'cancelled';
    const page = await search(ctx.search, { query: { ...parsed.query, limit: String(PAGE), offset: String(offset) }, dicomwebBaseUrl: ctx.dicomwebBaseUrl }, options);
    for (let k = 0; k < page.body.length; k++) {
      // Now and then the event loop reads the socket, so that a C-CANCEL is seen mid-page.
      if (k % CANCEL_CHECK_EVERY === CANCEL_CHECK_EVERY - 1) {
        await new Promise((resolve) => setImmediate(resolve));
        if (ctx.cancelled()) return 'cancelled';
      }
      emit(responseIdentifier(parsed.level, parsed.keys, page.body[k], ctx.aeTitle));
    }
    if (page.body.length < PAGE) return 'done';
  }
}

/** The Patient level: studies matching the patient keys, one answer per patient (PatientID with its issuer). */
async function runPatientFind(ctx: FindContext, parsed: ParsedQuery, emit: (identifier: DicomJson) => void): Promise<'done' | 'cancelled' | 'truncated'> {
  const query = patientSearchOf(parsed);
  const patients = new Map<string, { match: DicomJson; studies: number }>();
  let truncated = false;
  for (let offset = 0; ; offset += PAGE) {
    if (ctx.cancelled()) return 'cancelled';
    const page = await searchForStudies(ctx.search, { query: { ...query, limit: String(PAGE), offset: String(offset) }, dicomwebBaseUrl: ctx.dicomwebBaseUrl }, { restrictStudies: ctx.restrictStudies });
    for (const match of page.body) {
      const key = patientKeyOf(match);
      const seen = patients.get(key);
      if (seen) seen.studies++;
      else patients.set(key, { match, studies: 1 });
    }
    if (page.body.length < PAGE) break;
    if (offset + PAGE >= MAX_PATIENT_STUDIES) {
      truncated = true;
      break;
    }
  }
  for (const { match, studies } of patients.values()) {
    emit(responseIdentifier('PATIENT', parsed.keys, match, ctx.aeTitle, { '00201200': { vr: 'IS', Value: [studies] } }));
  }
  return truncated ? 'truncated' : 'done';
}

/** Presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2): at most 128 per association. */
const MAX_CONTEXTS = 128;

/**
 * Opens an association to a move destination, proposing one presentation context per SOP Class
 * and transfer syntax of the instances (stored syntaxes and Explicit VR Little Endian).
 */
export function openMoveAssociation(destination: ReachablePeer, aeTitle: string, instances: readonly StoredInstance[], secure?: tls.ConnectionOptions): Promise<OutboundAssociation> {
  const syntaxesByClass = new Map<string, Set<string>>();
  for (const i of instances) {
    const set = syntaxesByClass.get(i.sopClassUID) ?? new Set<string>();
    set.add(i.transferSyntaxUID);
    syntaxesByClass.set(i.sopClassUID, set);
  }
  const contexts: ProposedContext[] = [];
  for (const [sopClass, stored] of syntaxesByClass) {
    for (const ts of proposedSyntaxes([...stored])) contexts.push({ abstractSyntaxUID: sopClass, transferSyntaxUIDs: [ts] });
  }
  return openAssociation(destination, aeTitle, contexts.slice(0, MAX_CONTEXTS), secure);
}
