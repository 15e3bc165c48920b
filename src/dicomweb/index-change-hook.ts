import type { Knex } from 'knex';
import type { IndexChange } from '../db/instance-index';

/** Request context an index-change hook may need (links written into derived resources). */
export interface IndexChangeContext {
  /** Base of this server's DICOMweb URLs, e.g. `https://lake.example/dicomweb`. */
  dicomwebBaseUrl: string;
  /** Projects the change belongs to (STOW: the request's target projects from the access decision). */
  projects?: string[];
  /** Which existing studies the change may add to: any (default), or only those already in `projects`. */
  studyScope?: 'all' | 'projects';
}

/**
 * Work that must commit or roll back with an index change (STOW, delete): the FHIR
 * ImagingStudy view of the changed studies, project links, audit rows.
 */
export type IndexChangeHook = (trx: Knex.Transaction, change: IndexChange, context: IndexChangeContext) => Promise<void>;
