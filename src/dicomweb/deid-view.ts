/**
 * The researcher view of DICOMweb (PS3.15 Annex E applied at retrieve time): for a request whose
 * access decision says 'deidentified', the UIDs in its path are resolved from their
 * de-identified form, and every study it answers gets a DeidContext (project, options, patient
 * pseudonym, UID mapper), looked up in a few batched queries per response.
 */
import type { Readable } from 'node:stream';
import type { Database } from '../db/database';
import { findProjectIds, findSeriesSiblingUids, findStudyPrivacyRows, type RetrieveTarget, type StoredInstance, type StudyPrivacyRow } from '../db/wado-index';
import type { DicomJson } from '../dicom/types';
import { HttpError, ServiceUnavailableError } from '../http/errors';
import type { DeidContext, DeidOptions, PatientPseudonym, PrivacyService, ResolvedUid } from '../privacy/privacy-types';
import type { BlobStore } from '../storage/blob-store';

/** The de-identification engine (src/dicom/deidentify*): header edits on DICOM JSON and on Part 10 streams. */
export interface DeidEngine {
  /** A DICOM JSON dataset de-identified for `ctx`; relative BulkDataURIs are passed through `rewriteBulkDataUri` (null: removed). */
  deidentifyJson(dataset: DicomJson, ctx: DeidContext, rewriteBulkDataUri: (uri: string) => string | null): DicomJson;
  /** The stored instance as Part 10 with a de-identified header and the pixel data streamed unchanged. */
  deidentifyInstance(blobs: BlobStore, instance: StoredInstance, ctx: DeidContext): Promise<Readable>;
  /** The Transfer Syntax a de-identified instance stored in `stored` is delivered in. */
  transferSyntaxOf(stored: string): string;
}

/** Look-ups of at most this many unknown instances also check the rest of their series. */
const SIBLING_EXPANSION_MAX = 8;
const SIBLING_LIMIT = 2_000;

/** Text of the QIDO Warning that says instances are withheld, without naming them. */
export function withheldWarning(count: number): string {
  return `${count} instance${count === 1 ? '' : 's'} withheld pending burned-in annotation review`;
}

/**
 * Look-ups shared by the requests of one router (a viewer asks for the same studies again and
 * again). Only what cannot go stale is kept without limit of time: a de-identified UID's
 * original (an HMAC of it under the server's key) and a patient's pseudonym (assigned once).
 * Which project a study is seen through and a project's options can change, so they live a
 * couple of seconds. Withheld instances are looked up on every request; only "not withheld"
 * answers are kept, for `visibleTtlMs` (a clearance withdrawn, or an instance stored again
 * with burned-in annotation, through ANOTHER process applies within that time; a store through
 * this router, or a clearance or options change through this process's /privacy routes
 * (PrivacyService.onChange), forgets them at once).
 */
export class DeidCache {
  readonly uids = new BoundedMap<string, ResolvedUid>(200_000);
  readonly pseudonyms = new BoundedMap<number, PatientPseudonym>(100_000);
  readonly studies = new BoundedMap<string, { row: StudyPrivacyRow; until: number }>(50_000);
  readonly options = new BoundedMap<string, { options: DeidOptions; until: number }>(10_000);
  /** SOP Instance UID -> until when it is known not to be withheld. */
  readonly visible = new BoundedMap<string, number>(200_000);

  constructor(
    readonly ttlMs = 2_000,
    readonly visibleTtlMs = 5_000,
  ) {}

  /** Forgets every "not withheld" answer (after a store: an instance may have come back with burned-in annotation). */
  forgetVisible(): void {
    this.visible.clear();
  }

  /** Forgets what a change of the privacy settings (clearances, project options) makes stale. */
  forgetSettings(): void {
    this.visible.clear();
    this.options.clear();
  }
}

/** A Map that forgets its oldest entries beyond `max`. */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(private readonly max: number) {
    super();
  }

  override set(key: K, value: V): this {
    if (!this.has(key) && this.size >= this.max) {
      const oldest = this.keys().next();
      if (!oldest.done) this.delete(oldest.value);
    }
    return super.set(key, value);
  }
}

/** What a researcher's path named, resolved to the original UIDs. */
export interface ResolvedTarget extends RetrieveTarget {
  /** The project whose UIDs the path used. */
  projectId: string;
}

/** Everything the DICOMweb services need to answer one researcher request. */
export class DeidView {
  /** Original UID -> the de-identified UID this request showed or was given (for error messages). */
  private readonly shown = new Map<string, string>();
  private readonly contextCache = new Map<string, DeidContext | null>();
  private projectList: Promise<string[]> | null = null;

  constructor(
    readonly db: Database,
    readonly privacy: PrivacyService,
    readonly engine: DeidEngine,
    /** The token's projects (decision.rowFilter.projects). */
    readonly projects: readonly string[] | 'all',
    private readonly cache: DeidCache = new DeidCache(),
  ) {}

  /** Withheld status already looked up in this request (SOP Instance UID -> withheld). */
  private readonly withheldSeen = new Map<string, boolean>();

  /** De-identified UIDs resolved within the token's projects, through the shared cache. */
  private async resolve(deidUids: readonly string[]): Promise<Map<string, ResolvedUid>> {
    const projects = await this.tokenProjects();
    const allowed = new Set(projects);
    const out = new Map<string, ResolvedUid>();
    const missing: string[] = [];
    for (const u of deidUids) {
      const hit = this.cache.uids.get(u);
      if (hit && allowed.has(hit.projectId)) out.set(u, hit);
      else missing.push(u);
    }
    if (missing.length > 0) {
      for (const [u, r] of await this.privacy.resolveDeidUids(this.db.knex, projects, missing)) {
        out.set(u, r);
        this.cache.uids.set(u, r);
      }
    }
    return out;
  }

  /** The projects UIDs are resolved within. */
  tokenProjects(): Promise<string[]> {
    if (this.projects !== 'all') return Promise.resolve([...this.projects].sort());
    this.projectList ??= findProjectIds(this.db.knex);
    return this.projectList;
  }

  /**
   * Resolves the de-identified UIDs of a path (PS3.18 10.4.1 targets). A UID that is unknown in
   * the token's projects (an original UID included: researchers never know those) is a 404 that
   * names the UID as sent, exactly like a missing study.
   */
  async resolveTarget(target: RetrieveTarget): Promise<ResolvedTarget> {
    // Routes pass '' for a level their path does not have.
    const sent = [target.studyInstanceUID, target.seriesInstanceUID, target.sopInstanceUID].filter((u): u is string => !!u);
    const resolved = await this.resolve(sent);
    const study = resolved.get(target.studyInstanceUID);
    if (!study) throw new HttpError(404, `study ${target.studyInstanceUID} not found`);
    const ctx = (await this.contexts([study.uid])).get(study.uid);
    // The path must use the UIDs of the project this token sees the study through.
    if (!ctx || ctx.projectId !== study.projectId) throw new HttpError(404, `study ${target.studyInstanceUID} not found`);
    const out: ResolvedTarget = { studyInstanceUID: study.uid, projectId: study.projectId };
    this.shown.set(study.uid, target.studyInstanceUID);
    if (target.seriesInstanceUID) {
      const series = resolved.get(target.seriesInstanceUID);
      if (!series || series.projectId !== study.projectId) {
        throw new HttpError(404, `series ${target.seriesInstanceUID} not found in study ${target.studyInstanceUID}`);
      }
      out.seriesInstanceUID = series.uid;
      this.shown.set(series.uid, target.seriesInstanceUID);
    }
    if (target.sopInstanceUID) {
      const sop = resolved.get(target.sopInstanceUID);
      if (!sop || sop.projectId !== study.projectId) {
        throw new HttpError(404, `instance ${target.sopInstanceUID} not found in series ${target.seriesInstanceUID} of study ${target.studyInstanceUID}`);
      }
      out.sopInstanceUID = sop.uid;
      this.shown.set(sop.uid, target.sopInstanceUID);
    }
    return out;
  }

  /** Original UIDs of de-identified ones (query match values); unknown ones are absent. */
  async resolveUids(deidUids: readonly string[]): Promise<Map<string, string>> {
    if (deidUids.length === 0) return new Map();
    const resolved = await this.resolve(deidUids);
    const out = new Map<string, string>();
    for (const [deid, r] of resolved) out.set(deid, r.uid);
    return out;
  }

  /**
   * The DeidContext of each study (by original Study Instance UID): the alphabetically first of
   * the token's projects holding it, its options, the patient's pseudonym, the project's UID
   * mapper. Three queries for any number of studies; a study outside the projects has none.
   */
  async contexts(studyUids: readonly string[]): Promise<Map<string, DeidContext>> {
    const missing = [...new Set(studyUids)].filter((u) => !this.contextCache.has(u));
    if (missing.length > 0) {
      const knex = this.db.knex;
      const now = Date.now();
      const scope = this.projects === 'all' ? '*' : [...this.projects].sort().join(',');
      const rows: StudyPrivacyRow[] = [];
      const unknown: string[] = [];
      for (const uid of missing) {
        const hit = this.cache.studies.get(`${scope}|${uid}`);
        if (hit && hit.until > now) rows.push(hit.row);
        else unknown.push(uid);
      }
      for (const row of await findStudyPrivacyRows(knex, unknown, this.projects)) {
        rows.push(row);
        this.cache.studies.set(`${scope}|${row.studyInstanceUID}`, { row, until: now + this.cache.ttlMs });
      }
      const linked = rows.filter((r) => r.projectId !== null);
      const [pseudonyms, options] = await Promise.all([
        this.pseudonymsOf([...new Set(linked.map((r) => r.patientPk))]),
        this.optionsOf([...new Set(linked.map((r) => r.projectId!))]),
      ]);
      for (const uid of missing) this.contextCache.set(uid, null);
      for (const r of linked) {
        const patient = pseudonyms.get(r.patientPk);
        const opts = options.get(r.projectId!);
        if (!patient || !opts) continue;
        this.contextCache.set(r.studyInstanceUID, { projectId: r.projectId!, options: opts, patient, mapUid: this.mapperFor(r.projectId!) });
      }
    }
    const out = new Map<string, DeidContext>();
    for (const uid of studyUids) {
      const ctx = this.contextCache.get(uid);
      if (ctx) out.set(uid, ctx);
    }
    return out;
  }

  /** The context of one study, or a 404 (a study the token does not see through a project). */
  async contextOf(studyUid: string): Promise<DeidContext> {
    const ctx = (await this.contexts([studyUid])).get(studyUid);
    if (!ctx) throw new HttpError(404, `study ${this.shown.get(studyUid) ?? 'requested'} not found`);
    return ctx;
  }

  /** The options of each of the token's projects. */
  async projectOptions(): Promise<Map<string, DeidOptions>> {
    return this.optionsOf(await this.tokenProjects());
  }

  /** Pseudonyms of DICOM patients (patients.id), through the shared cache. */
  async pseudonymsOf(patientPks: readonly number[]): Promise<Map<number, PatientPseudonym>> {
    const out = new Map<number, PatientPseudonym>();
    const missing = patientPks.filter((pk) => {
      const hit = this.cache.pseudonyms.get(pk);
      if (hit) out.set(pk, hit);
      return !hit;
    });
    if (missing.length > 0) {
      for (const [pk, p] of await this.privacy.pseudonymsForDicomPatients(this.db.knex, missing)) {
        out.set(pk, p);
        this.cache.pseudonyms.set(pk, p);
      }
    }
    return out;
  }

  private async optionsOf(projectIds: string[]): Promise<Map<string, DeidOptions>> {
    const now = Date.now();
    const out = new Map<string, DeidOptions>();
    const missing = projectIds.filter((id) => {
      const hit = this.cache.options.get(id);
      if (hit && hit.until > now) out.set(id, hit.options);
      return !(hit && hit.until > now);
    });
    if (missing.length > 0) {
      for (const [id, o] of await this.privacy.projectOptions(this.db.knex, missing)) {
        out.set(id, o);
        this.cache.options.set(id, { options: o, until: now + this.cache.ttlMs });
      }
    }
    return out;
  }

  /** SOP Instance UIDs, of those given, withheld from researchers (burned-in annotation not cleared). */
  async withheld(sopUids: readonly string[]): Promise<Set<string>> {
    const out = new Set<string>();
    const now = Date.now();
    const wanted = new Set(sopUids);
    let unknown = [...wanted].filter((u) => {
      const seen = this.withheldSeen.get(u);
      if (seen) out.add(u);
      return seen === undefined && !((this.cache.visible.get(u) ?? 0) > now);
    });
    // A viewer walks a series instance by instance: one look-up answers for the whole series.
    if (unknown.length > 0 && unknown.length <= SIBLING_EXPANSION_MAX) {
      const siblings = await findSeriesSiblingUids(this.db.knex, unknown, SIBLING_LIMIT);
      unknown = [...new Set([...unknown, ...siblings.filter((u) => !((this.cache.visible.get(u) ?? 0) > now))])];
    }
    // Chunks keep each look-up's parameter list bounded.
    for (let i = 0; i < unknown.length; i += 5000) {
      const chunk = unknown.slice(i, i + 5000);
      const found = await this.privacy.withheldInstances(this.db.knex, chunk);
      for (const uid of chunk) {
        this.withheldSeen.set(uid, found.has(uid));
        if (found.has(uid)) {
          if (wanted.has(uid)) out.add(uid);
          this.cache.visible.delete(uid);
        } else {
          this.cache.visible.set(uid, now + this.cache.visibleTtlMs);
        }
      }
    }
    return out;
  }

  /** 404 when the instance of a resolved target is withheld; study and series targets pass. */
  async assertInstanceVisible(target: RetrieveTarget): Promise<void> {
    if (!target.sopInstanceUID) return;
    if ((await this.withheld([target.sopInstanceUID])).size > 0) {
      const sent = this.shown.get(target.sopInstanceUID) ?? 'requested';
      throw new HttpError(404, `instance ${sent} is withheld from researchers pending burned-in annotation review`);
    }
  }

  /** Remembers that `original` was shown as `deid` (so error texts can name the latter). */
  remember(original: string, deid: string): void {
    this.shown.set(original, deid);
  }

  /**
   * An error as the researcher may see it: original UIDs this request touched are replaced by
   * the de-identified ones, any other UID but the standard's own (1.2.840.10008.*) is masked.
   */
  sanitize(err: unknown): unknown {
    if (!(err instanceof HttpError)) return err;
    let message = err.message;
    for (const [original, deid] of this.shown) message = message.split(original).join(deid);
    const known = new Set(this.shown.values());
    message = message.replace(/\b\d+(\.\d+){3,}\b/g, (uid) => (known.has(uid) || uid.startsWith('1.2.840.10008.') ? uid : '(uid)'));
    if (message === err.message) return err;
    const copy = new HttpError(err.status, message, err.headers);
    return copy;
  }

  private readonly mappers = new Map<string, (uid: string) => string>();

  private mapperFor(projectId: string): (uid: string) => string {
    let m = this.mappers.get(projectId);
    if (!m) {
      const inner = this.privacy.uidMapper(projectId);
      m = (uid: string) => {
        const deid = inner(uid);
        this.shown.set(uid, deid);
        return deid;
      };
      this.mappers.set(projectId, m);
    }
    return m;
  }
}

/** Keeps relative `bulkdata/...` URIs (they name tag paths only); any other URI may carry original UIDs: removed. */
export function relativeBulkDataOnly(uri: string): string | null {
  return uri.startsWith('bulkdata/') ? uri : null;
}

/** The access decision fields the view reads (src/auth/access-guard.ts AccessLocals). */
interface AccessLike {
  decision?: { view?: string; rowFilter?: { projects?: readonly string[] | 'all' } };
}

/**
 * The view of a request, or undefined when it sees identified data. A de-identified request on
 * a server without the privacy layer is refused (503), never answered identified.
 */
export function createDeidView(
  access: unknown,
  deps: { db: Database; privacy?: PrivacyService; engine?: DeidEngine; cache?: DeidCache },
): DeidView | undefined {
  const decision = (access as AccessLike | undefined)?.decision;
  if (decision?.view !== 'deidentified') return undefined;
  if (!deps.privacy || !deps.engine) throw new ServiceUnavailableError('de-identified DICOMweb views are not configured on this server');
  return new DeidView(deps.db, deps.privacy, deps.engine, decision.rowFilter?.projects ?? [], deps.cache);
}
