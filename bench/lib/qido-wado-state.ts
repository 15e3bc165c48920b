import { readFileSync, writeFileSync } from 'node:fs';
import type { IndexLoaderState } from './index-loader';
import type { RealStudy, StudyKind } from './real-studies';

/**
 * What `bench/qido-wado.ts --keep-db FILE` leaves behind so that `--reuse FILE` can measure
 * again without storing and bulk-loading the index anew (~5 minutes at 1M instances): the
 * database, the server's DATA_DIR (the real studies' blobs and signing keys) and the UIDs.
 */
export interface KeptReadIndex {
  adminUrl: string;
  databaseName: string;
  /** Holds dataDir; removed by whoever drops the database. */
  workRoot: string;
  dataDir: string;
  real: Record<StudyKind, RealStudy>;
  loader: IndexLoaderState;
}

/** Writes the state file of a kept index. */
export function saveKeptIndex(file: string, kept: KeptReadIndex): void {
  writeFileSync(file, `${JSON.stringify(kept, null, 2)}\n`);
}

/** Reads the state file of a kept index; throws when it is not one. */
export function loadKeptIndex(file: string): KeptReadIndex {
  const kept = JSON.parse(readFileSync(file, 'utf8')) as KeptReadIndex;
  if (!kept.databaseName || !kept.dataDir || !kept.real?.oct || !kept.loader?.bases) throw new Error(`${file} is not a kept QIDO/WADO index`);
  return kept;
}
