/**
 * Column-level policy: which sensitive elements of a resource a role sees as they are, sees
 * masked (pseudonym, shifted date, redacted text) or does not see at all. Elements not listed
 * for a type are not sensitive and always visible. Paths are FHIR element paths; the
 * `StoredInstance` pseudo-type names the index columns that locate DICOM objects.
 */
import type { Role } from './roles';

/** The answer for one role and type: lists of element paths. */
export interface FieldVisibility {
  visible: string[];
  masked: string[];
  hidden: string[];
}

/** What a caller who sees identified data has withheld of one type: the masked and hidden element paths. */
export type FieldRules = Pick<FieldVisibility, 'masked' | 'hidden'>;

/** The value a masked element carries in every answer (FHIR and DICOM alike). */
export const MASKED_VALUE = '***';

type Treatment = 'visible' | 'masked' | 'hidden';
/** Per sensitive element: treatment for admin, data-manager, pi, researcher. */
type Row = [admin: Treatment, dataManager: Treatment, pi: Treatment, researcher: Treatment];

const V: Treatment = 'visible';
const M: Treatment = 'masked';
const H: Treatment = 'hidden';

/**
 * The matrix. Patient identifiers: admin only. Names, birth dates, addresses: pseudonyms and
 * shifted dates for researchers. Diagnosis text: masked for researchers. Object locations (blob
 * keys, storage paths): hidden from researchers.
 */
const MATRIX: Record<string, Record<string, Row>> = {
  Patient: {
    identifier: [V, M, H, H],
    name: [V, V, M, M],
    birthDate: [V, V, M, M],
    telecom: [V, M, H, H],
    address: [V, M, H, H],
    contact: [V, M, H, H],
    photo: [V, H, H, H],
  },
  ImagingStudy: {
    identifier: [V, M, H, H],
    started: [V, V, M, M],
    referrer: [V, V, H, H],
    interpreter: [V, V, H, H],
    description: [V, V, M, M],
    note: [V, V, H, H],
    'series.performer': [V, V, H, H],
    'series.started': [V, V, M, M],
  },
  Condition: {
    identifier: [V, M, H, H],
    'code.text': [V, V, M, M],
    note: [V, V, H, H],
    recordedDate: [V, V, M, M],
    onsetDateTime: [V, V, M, M],
    recorder: [V, V, H, H],
    asserter: [V, V, H, H],
  },
  Observation: {
    identifier: [V, M, H, H],
    note: [V, V, H, H],
    effectiveDateTime: [V, V, M, M],
    performer: [V, V, H, H],
  },
  DiagnosticReport: {
    identifier: [V, M, H, H],
    conclusion: [V, V, M, M],
    presentedForm: [V, V, H, H],
    effectiveDateTime: [V, V, M, M],
    performer: [V, V, H, H],
  },
  StoredInstance: {
    blob_key: [V, V, H, H],
    storage_path: [V, V, H, H],
    size: [V, V, V, V],
  },
  AuditEvent: {
    'agent.network.address': [V, H, H, H],
    'entity.query': [V, H, H, H],
  },
};

const COLUMN: Record<Role, number> = { admin: 0, 'data-manager': 1, pi: 2, researcher: 3 };

/** The column-level matrix for one role and resource type (policy layer; pure). */
export function fieldVisibility(role: Role, resourceType: string): FieldVisibility {
  const rows = MATRIX[resourceType] ?? {};
  const out: FieldVisibility = { visible: [], masked: [], hidden: [] };
  const col = COLUMN[role];
  for (const [path, row] of Object.entries(rows)) out[row[col]].push(path);
  return out;
}

/** Resource types that have sensitive elements listed in the matrix. */
export function typesWithSensitiveFields(): string[] {
  return Object.keys(MATRIX);
}
