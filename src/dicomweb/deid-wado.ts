/**
 * WADO-RS, rendered and thumbnail targets for researchers (PS3.18 10.4 over PS3.15 Annex E):
 * the de-identified UIDs of a path resolved to the stored ones, withheld instances refused,
 * and bulk data served only for attributes that survive de-identification.
 */
import { findMetadataPage, type RetrieveTarget } from '../db/wado-index';
import type { DicomJson, DicomJsonElement } from '../dicom/types';
import { HttpError } from '../http/errors';
import { relativeBulkDataOnly, type DeidView } from './deid-view';
import { parseBulkPath, type WadoServices } from './wado-rs';

/**
 * The stored UIDs of a researcher's target (unchanged without a view): unknown UIDs (original
 * ones included) are 404 like a missing study, and so is a withheld instance.
 */
export async function resolveResearcherTarget<T extends RetrieveTarget>(view: DeidView | undefined, sent: T): Promise<T> {
  if (!view) return sent;
  const resolved = await view.resolveTarget(sent);
  await view.assertInstanceVisible(resolved);
  const out: T = { ...sent, studyInstanceUID: resolved.studyInstanceUID };
  if (sent.seriesInstanceUID) out.seriesInstanceUID = resolved.seriesInstanceUID;
  if (sent.sopInstanceUID) out.sopInstanceUID = resolved.sopInstanceUID;
  return out;
}

/**
 * 404 unless the bulk data path names an attribute a researcher's metadata still carries as
 * bulk data (Pixel Data and other kept values); a removed attribute's bytes are never served.
 */
export async function assertBulkdataVisible(
  services: Pick<WadoServices, 'db'>,
  view: DeidView | undefined,
  target: Required<RetrieveTarget>,
  segments: string[],
): Promise<void> {
  if (!view) return;
  const path = parseBulkPath(segments);
  const [row] = await findMetadataPage(services.db.knex, target, null, 1);
  if (!row) throw new HttpError(404, `instance ${target.sopInstanceUID} not found`);
  const ctx = await view.contextOf(target.studyInstanceUID);
  const dataset = view.engine.deidentifyJson(JSON.parse(row.json) as DicomJson, ctx, relativeBulkDataOnly);
  if (!findBulkElement(dataset, path)?.BulkDataURI) {
    throw new HttpError(404, `instance ${target.sopInstanceUID} has no bulk data value at ${path.join('/')} for researchers (removed by de-identification, PS3.15 Annex E)`);
  }
}

/** The element a bulk data path (`tag[/item/tag...]`) names in a DICOM JSON dataset. */
function findBulkElement(dataset: DicomJson, path: string[]): DicomJsonElement | undefined {
  let current: DicomJson | undefined = dataset;
  for (let i = 0; i < path.length && current; i += 2) {
    const element: DicomJsonElement | undefined = current[path[i]];
    if (i + 1 >= path.length) return element;
    current = element?.Value?.[Number(path[i + 1])] as DicomJson | undefined;
  }
  return undefined;
}

