import type { Knex } from 'knex';
import type { AlongsideQuery, IndexChange } from '../db/instance-index';

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
 * ImagingStudy view of the changed studies, project links, audit rows. `alongsideFor` may give
 * the part of it that can run in the index's own insert statement for this context
 * (src/db/instance-index.ts AlongsideQuery); its row then comes in `change.alongside`.
 */
export interface IndexChangeHook {
  (trx: Knex.Transaction, change: IndexChange, context: IndexChangeContext): Promise<void>;
  alongsideFor?(context: IndexChangeContext): AlongsideQuery | undefined;
}
