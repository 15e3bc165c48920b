import type { AuditSearchParams } from '../../audit';
import { badRequest } from '../outcome';
import { DEFAULT_COUNT, MAX_COUNT } from '../search/search-request';
import { parseDateValue, splitOnUnescaped, unescapeValue } from '../search/search-values';
import { toTimestamp } from '../search/date-range';

/**
 * FHIR R4 AuditEvent search parameters (AuditEvent 6.4.7) mapped onto the indexed keys of the
 * audit trail (`searchAuditEvents`): type, subtype, agent, entity, date, patient, outcome,
 * action. The trail answers ANDed single values, newest first with keyset paging, so OR lists
 * (`a,b`), `ne` dates and modifiers other than `:identifier` are a 400, not a silently wrong page.
 */

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const REST_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
const OUTCOME_SYSTEM = 'http://hl7.org/fhir/audit-event-outcome';
const ACTION_SYSTEM = 'http://hl7.org/fhir/audit-event-action';

/** The parameter that carries the keyset cursor of the next page (opaque; from our `next` links). */
export const CURSOR_PARAM = '_cursor';

/** A parsed AuditEvent search. */
export interface AuditEventQuery {
  params: AuditSearchParams;
  count: number;
  /** Ids asked for with `_id` (answered by reads, not by the trail's search). */
  ids?: string[];
  /** True when the ANDed criteria contradict each other: the answer is empty without asking. */
  empty: boolean;
  /** Parameters applied, for the self and next links. */
  applied: Array<[string, string]>;
  /** Parameters ignored under lenient handling, with why. */
  ignored: Array<{ name: string; reason: string }>;
  /** `_summary=count`: the total only, no entries (FHIR R4 3.1.1.5.7). */
  summaryCount?: boolean;
  /** `_total=accurate` (or `estimate`): the Bundle carries a total (FHIR R4 3.1.1.5.9). */
  total?: boolean;
}

type Key = Exclude<keyof AuditSearchParams, 'since' | 'until' | 'count' | 'cursor'>;

/** Token parameters: the column they map to and the system their codes belong to. */
const TOKENS: Record<string, { key: Key; system: (code: string) => string | undefined; allowed?: RegExp }> = {
  type: { key: 'type', system: (c) => (c === 'rest' ? EVENT_TYPE : /^\d{6}$/.test(c) ? DCM : undefined) },
  subtype: { key: 'subtype', system: (c) => (/^\d{6}$/.test(c) ? DCM : REST_INTERACTION) },
  outcome: { key: 'outcome', system: () => OUTCOME_SYSTEM, allowed: /^(0|4|8|12)$/ },
  action: { key: 'action', system: () => ACTION_SYSTEM, allowed: /^[CRUDE]$/ },
};

const IGNORED_RESULT_PARAMS = new Set(['_summary', '_elements', '_include', '_revinclude', '_contained', '_containedType']);

/** Parses the query of `GET /AuditEvent`; throws 400 OperationOutcomeErrors for what the trail cannot answer. */
export function parseAuditEventQuery(query: Record<string, string[]>, options: { strict?: boolean; baseUrl?: string } = {}): AuditEventQuery {
  const out: AuditEventQuery = { params: {}, count: DEFAULT_COUNT, empty: false, applied: [], ignored: [] };
  const ignore = (name: string, reason: string) => {
    if (options.strict) throw badRequest(`${reason}: ${name}`);
    out.ignored.push({ name, reason });
  };
  const set = (key: Key, value: string) => {
    const current = out.params[key];
    if (current !== undefined && current !== value) out.empty = true;
    (out.params as Record<string, unknown>)[key] = value;
  };
  let since = Number.NEGATIVE_INFINITY;
  let until = Number.POSITIVE_INFINITY;

  for (const [rawKey, values] of Object.entries(query)) {
    const [name, modifier, ...extra] = rawKey.split(':');
    for (const value of values) {
      if (name === '_format' || name === '_pretty') continue;
      if (extra.length > 0) throw badRequest(`Invalid parameter name ${rawKey}`);
      if (name === '_count') {
        if (!/^\d+$/.test(value) || Number(value) < 1) throw badRequest(`_count must be an integer >= 1, not '${value}'`);
        out.count = Math.min(Number(value), MAX_COUNT);
        continue;
      }
      if (name === CURSOR_PARAM) {
        out.params.cursor = value;
        continue;
      }
      if (name === '_sort') {
        if (value !== '-date' && value !== '-_lastUpdated') ignore(`_sort=${value}`, 'The audit trail is served newest first only (_sort=-date)');
        continue;
      }
      if (name === '_summary' && value === 'count') {
        out.summaryCount = true;
        out.applied.push([rawKey, value]);
        continue;
      }
      if (name === '_total') {
        if (!['none', 'estimate', 'accurate'].includes(value)) throw badRequest(`_total must be none, estimate or accurate, not '${value}'`);
        out.total = value !== 'none';
        out.applied.push([rawKey, value]);
        continue;
      }
      if (IGNORED_RESULT_PARAMS.has(name)) {
        ignore(rawKey, 'Not supported on AuditEvent');
        continue;
      }
      const single = splitOnUnescaped(value, ',');
      if (single.length > 1) throw badRequest(`AuditEvent search takes one value per parameter (repeat the parameter to AND); OR lists are not supported: ${rawKey}=${value}`);
      if (name === '_id') {
        if (modifier) throw badRequest(`Modifier :${modifier} is not supported on _id`);
        (out.ids ??= []).push(unescapeValue(value));
      } else if (name === 'date' || name === '_lastUpdated') {
        if (modifier) throw badRequest(`Modifier :${modifier} is not supported on ${name}`);
        const range = dateBounds(value, name);
        since = Math.max(since, range.since);
        until = Math.min(until, range.until);
      } else if (TOKENS[name]) {
        if (modifier) throw badRequest(`Modifier :${modifier} is not supported on AuditEvent ${name}`);
        const spec = TOKENS[name];
        const parts = splitOnUnescaped(value, '|').map(unescapeValue);
        const code = parts[parts.length - 1];
        if (!code) throw badRequest(`${name} needs a code (system|code or code), not '${value}'`);
        if (spec.allowed && !spec.allowed.test(code)) throw badRequest(`'${code}' is not an AuditEvent ${name} code`);
        if (parts.length > 1 && parts[0] !== spec.system(code)) out.empty = true;
        set(spec.key, code);
      } else if (name === 'agent' || name === 'entity' || name === 'patient') {
        if (modifier && modifier !== 'identifier' && !(name === 'patient' && modifier === 'Patient')) {
          throw badRequest(`Modifier :${modifier} is not supported on AuditEvent ${name}`);
        }
        set(name, referenceKey(name, unescapeValue(value), modifier === 'identifier', options.baseUrl));
      } else {
        ignore(rawKey, 'Unknown or unsupported AuditEvent search parameter');
        continue;
      }
      out.applied.push([rawKey, value]);
    }
  }
  if (out.ids && Object.keys(out.params).some((k) => k !== 'cursor')) throw badRequest('_id cannot be combined with other AuditEvent search parameters');
  if (since > Number.NEGATIVE_INFINITY) out.params.since = toTimestamp(since);
  if (until < Number.POSITIVE_INFINITY) out.params.until = toTimestamp(until);
  if (since >= until) out.empty = true;
  return out;
}

/**
 * The [since, until) bounds on `recorded` (an instant, so [t, t + 1 ms)) that a prefixed date
 * selects (FHIR R4 search 3.1.1.4.6, same reading as the engine's date search).
 */
export function dateBounds(raw: string, name: string): { since: number; until: number } {
  const { prefix, range } = parseDateValue(raw, name);
  switch (prefix) {
    case 'eq':
      return { since: range.low, until: range.high };
    case 'gt':
    case 'sa':
      return { since: range.high, until: Number.POSITIVE_INFINITY };
    case 'ge':
      return { since: range.low, until: Number.POSITIVE_INFINITY };
    case 'lt':
    case 'eb':
      return { since: Number.NEGATIVE_INFINITY, until: range.low };
    case 'le':
      return { since: Number.NEGATIVE_INFINITY, until: range.high };
    case 'ap': {
      const spread = Math.max(Math.abs(Date.now() - range.low) * 0.1, 86400000);
      return { since: range.low - spread, until: range.high + spread };
    }
    default:
      throw badRequest(`The prefix ${prefix} is not supported on AuditEvent ${name} (one contiguous range only)`);
  }
}

/** The trail's key for a reference value: `Patient/1` for patient, the identifier value for `:identifier`, else as given. */
function referenceKey(name: 'agent' | 'entity' | 'patient', value: string, identifier: boolean, baseUrl?: string): string {
  let v = value.trim();
  if (identifier) return v.slice(v.indexOf('|') + 1);
  if (baseUrl && v.startsWith(`${baseUrl}/`)) v = v.slice(baseUrl.length + 1);
  if (name === 'patient' && !v.startsWith('Patient/')) v = `Patient/${v}`;
  if (!v) throw badRequest(`${name} needs a value`);
  return v;
}
