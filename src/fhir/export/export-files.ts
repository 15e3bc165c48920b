import type { Readable } from 'node:stream';
import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import { claimBlob } from '../../db/blob-ledger';
import type { BlobStore } from '../../storage/blob-store';

/**
 * The output files of bulk exports: NDJSON, one resource type each, written to the blob store
 * (content-addressed, claimed in the blob ledger; the orphan sweeper removes a file's blob once no
 * export names it) or, on a server composed without one, into bulk_export_files.body.
 */

/** One output file of a manifest: its resource type, its url (relative to the FHIR base here) and how many resources it holds. */
export interface ExportFile {
  type: string;
  url: string;
  count: number;
}

/** Where the files go. */
export interface FileDeps {
  knex: Knex;
  blobs?: BlobStore;
  /** Resources per file. */
  resourcesPerFile: number;
}

/** A file is closed at this many characters of NDJSON (large ImagingStudy resources): bounded memory, bounded rows. */
const FILE_BYTES = 32 * 1024 * 1024;

/**
 * Writes one output file to the blob store, as a STOW writes an instance: claimed in the blob
 * ledger before it gets its name (the claim is the commit's fence), so the orphan sweeper never
 * removes it under a file row about to name it. Resolves with its key.
 */
async function storeBlob(knex: Knex, blobs: BlobStore, body: Buffer): Promise<string> {
  const staged = blobs.stage();
  try {
    staged.writable.end(body);
    const { sha256, size } = await staged.done;
    const claim = claimBlob(knex, sha256, size);
    claim.catch(() => undefined); // reported by the commit it fences
    return (await blobs.commit(staged, claim)).key;
  } catch (err) {
    await blobs.discard(staged);
    throw err;
  }
}

/** Collects NDJSON lines of one type and writes a file each `resourcesPerFile` resources or FILE_BYTES bytes. */
export function createFileWriter(deps: FileDeps, exportId: string, type: string, nextSeq: () => number, output: ExportFile[]) {
  let lines: string[] = [];
  let bytes = 0;
  const flush = async () => {
    if (lines.length === 0) return;
    const seq = nextSeq();
    const body = Buffer.from(lines.join('\n') + '\n', 'utf8');
    const content = deps.blobs ? { blob_key: await storeBlob(deps.knex, deps.blobs, body) } : { body };
    await deps.knex('bulk_export_files').insert({ export_id: exportId, seq, resource_type: type, count: lines.length, ...content });
    output.push({ type, url: `$export-output/${exportId}/${seq}`, count: lines.length });
    lines = [];
    bytes = 0;
  };
  const add = async (resources: Resource[]) => {
    for (const r of resources) {
      const line = JSON.stringify(r);
      lines.push(line);
      bytes += line.length;
      if (lines.length >= deps.resourcesPerFile || bytes >= FILE_BYTES) await flush();
    }
  };
  return { add, flush };
}

/** One output file of a completed export of `owner`: a stream from the blob store, or the bytes kept in the database. */
export async function readExportFile(deps: Pick<FileDeps, 'knex' | 'blobs'>, id: string, seq: number, owner: string): Promise<Readable | Buffer | undefined> {
  const row = await deps.knex('bulk_export_files as f')
    .join('bulk_exports as e', 'e.id', 'f.export_id')
    .where({ 'f.export_id': id, 'f.seq': seq, 'e.owner': owner, 'e.state': 'completed' })
    .first('f.body', 'f.blob_key');
  if (!row) return undefined;
  if (row.blob_key === null || row.blob_key === undefined) return Buffer.from(row.body);
  if (!deps.blobs) throw new Error(`bulk export file ${id}/${seq} is in the blob store, and this server has none`);
  return deps.blobs.read(row.blob_key);
}
