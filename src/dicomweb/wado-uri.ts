/**
 * WADO-URI (PS3.18 chapter 9, URI Service): one object named by `studyUID`, `seriesUID` and
 * `objectUID`, delivered as application/dicom (Retrieve DICOM Instance, 9.4) or as a rendered
 * image (Retrieve Rendered Instance, 9.5). Nothing is retrieved, transcoded or rendered here:
 * the answer is the WADO-RS instance retrieve (wado-rs.ts) or the rendered frame
 * (rendered-rs.ts) of the same object, with the same views (de-identified, identifier-masked).
 *
 * Decisions (the conformance statement repeats them):
 * - contentType (9.1.2.2.1): media types with q values; the most preferred one this server can
 *   serve for the object wins: application/dicom for any object, image/jpeg or image/png for
 *   objects with pixel data. Nothing servable is 406 (image/gif, image/jp2, text/html, ...).
 * - No contentType (or * / *): image/jpeg for a single-frame image, or one frame named by
 *   frameNumber (the Single Frame Image category, 8.7.2); application/dicom for a multi-frame
 *   image without frameNumber and for objects without pixel data (SR, encapsulated PDF), whose
 *   rendered forms (video, text/html) are not offered.
 * - transferSyntax: as WADO-RS (as stored when absent; another syntax only by transcoding, and
 *   never for de-identified or masked instances: 406).
 * - anonymize=yes: honoured by the de-identified view of researchers and PIs (PS3.15 Annex E,
 *   withheld burned-in instances refused); refused with 403 for identified callers, whose
 *   answers this server never de-identifies.
 */
import type { StudyRestriction } from '../db/wado-index';
import { listPixelInstances, targetExists } from '../db/rendered-index';
import { HttpError } from '../http/errors';
import { rangeCovers } from './accept';
import type { DeidView } from './deid-view';
import type { IdentifierMask } from './identifier-mask';
import { retrieveRenderedFrames, type RenderedServices } from './rendered-rs';
import type { WadoUriQuery } from './wado-uri-params';
import { notFound, retrieveInstance, type WadoAnswer, type WadoServices } from './wado-rs';

/** What WADO-URI needs: the WADO-RS and rendering services. */
export type WadoUriServices = WadoServices & RenderedServices;

/** A parsed WADO-URI request whose target holds the stored UIDs (a researcher's already resolved). */
export interface WadoUriRequest extends WadoUriQuery {
  /** Limits the studies this request may see; filtered-out targets answer 404 like missing ones. */
  restrictStudies?: StudyRestriction;
  /** A researcher's view (PS3.15 Annex E). */
  deid?: DeidView;
  /** A data manager's identifier mask. */
  mask?: IdentifierMask;
}

type Delivered = 'application/dicom' | 'image/jpeg' | 'image/png';
type Category = 'single-frame' | 'multi-frame' | 'no-pixels';

const DICOM = 'application/dicom';
const RENDERED: Delivered[] = ['image/jpeg', 'image/png'];

/**
 * Retrieves one object by URI (PS3.18 9.4 Retrieve DICOM Instance, 9.5 Retrieve Rendered
 * Instance): picks the representation, then answers with the WADO-RS instance or rendered frame.
 */
export async function retrieveWadoUriObject(services: WadoUriServices, req: WadoUriRequest): Promise<WadoAnswer> {
  if (req.anonymize && !req.deid) {
    throw new HttpError(
      403,
      'anonymize=yes is served only through the de-identified view of a research project (researcher and PI tokens, PS3.15 Annex E); this token sees identified data, which this server does not de-identify on request',
    );
  }
  const target = { studyInstanceUID: req.target.studyInstanceUID, seriesInstanceUID: req.target.seriesInstanceUID, sopInstanceUID: req.target.sopInstanceUID };
  // application/dicom as the first choice needs no look-up (the usual request of viewers).
  const first = req.contentTypes[0];
  let delivered: Delivered | null = first && first.type !== '*/*' && rangeCovers(first.type, DICOM) ? DICOM : null;
  if (!delivered) {
    const category = await categorize(services, req);
    delivered = choose(req, category);
    if (!delivered) {
      if (category === 'no-pixels' && !(await targetExists(services.db.knex, target, req.restrictStudies))) throw await notFound(services.db.knex, target, req.restrictStudies);
      throw new HttpError(
        406,
        `none of the contentType media types can be served for instance ${target.sopInstanceUID}: it is offered as application/dicom` +
          (category === 'no-pixels' ? ' (it has no pixel data to render)' : ', image/jpeg or image/png'),
      );
    }
  }
  const ignored = [...req.ignored];
  if (delivered === DICOM) {
    if (req.frameNumber !== undefined || Object.keys(req.render).length > 0) ignored.push('frameNumber and rendering parameters (application/dicom is not rendered)');
    const accept = req.transferSyntax ? `${DICOM}; transfer-syntax=${req.transferSyntax}` : DICOM;
    return withWarnings(await retrieveInstance(services, { accept, restrictStudies: req.restrictStudies, deid: req.deid, mask: req.mask, ...target }), ignored);
  }
  if (req.transferSyntax) ignored.push('transferSyntax (rendered images have none)');
  const answer = await retrieveRenderedFrames(services, {
    accept: delivered,
    query: {},
    parameters: req.render,
    restrictStudies: req.restrictStudies,
    ...target,
    frameList: String(req.frameNumber ?? 1),
  });
  return withWarnings(answer, ignored);
}

/** Names the parameters that were understood but not honoured in a Warning header (RFC 7234 5.5 style, as QIDO-RS does). */
function withWarnings(answer: WadoAnswer, ignored: string[]): WadoAnswer {
  if (ignored.length === 0) return answer;
  answer.headers.Warning = `299 imaging-lake "not supported, ignored: ${ignored.join(', ')}"`;
  return answer;
}

/** Whether the object has pixel data, and how many frames (one indexed look-up; missing objects count as no pixels). */
async function categorize(services: WadoUriServices, req: WadoUriRequest): Promise<Category> {
  const [image] = await listPixelInstances(services.db.knex, req.target, req.restrictStudies);
  if (!image) return 'no-pixels';
  return image.frameCount > 1 ? 'multi-frame' : 'single-frame';
}

/** The representation: the most preferred contentType this object can be served in, or its category's default. */
function choose(req: WadoUriRequest, category: Category): Delivered | null {
  const fallback: Delivered = category === 'single-frame' || (category === 'multi-frame' && req.frameNumber !== undefined) ? 'image/jpeg' : DICOM;
  if (req.contentTypes.length === 0) return fallback;
  for (const range of req.contentTypes) {
    if (range.type === '*/*') return fallback;
    if (rangeCovers(range.type, DICOM)) return DICOM;
    if (category === 'no-pixels') continue;
    const image = RENDERED.find((t) => rangeCovers(range.type, t));
    if (image) return image;
  }
  return null;
}
