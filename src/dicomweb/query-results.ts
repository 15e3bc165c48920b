/**
 * QIDO-RS result data sets (PS3.18 10.6.3.3, DICOM JSON per Annex F): the requested attributes
 * from the stored study/series/instance datasets, plus values computed from the index
 * (counts, ModalitiesInStudy, RetrieveURL, InstanceAvailability).
 */
import type { DatasetSelection, QidoLevel, QidoRow } from '../db/qido-search';
import type { DicomJson, DicomJsonElement } from '../dicom/types';
import { attributeSource, defaultAttributes, dictionaryVr, LEVEL_DEPTH } from './query-keys';

/** What a search returns for each result. */
export interface ReturnPlan {
  level: QidoLevel;
  /** Top-level tags, sorted; ignored when includeAll. */
  tags: string[];
  includeAll: boolean;
}

/**
 * The return attributes of a search: the level's defaults, the defaults of the parent levels
 * when the resource spans them (PS3.18 10.6.3.3: all studies' series carry study attributes,
 * and so on), the parents' unique keys always, and the extra tags the query asked for.
 */
export function planReturn(level: QidoLevel, scope: 'all' | 'study' | 'series', extra: Iterable<string>, includeAll: boolean): ReturnPlan {
  const tags = new Set<string>(defaultAttributes(level));
  if (level !== 'study') tags.add('0020000D');
  if (level === 'instance') tags.add('0020000E');
  if (level === 'series' && scope === 'all') defaultAttributes('study').forEach((t) => tags.add(t));
  if (level === 'instance' && scope !== 'series') defaultAttributes('series').forEach((t) => tags.add(t));
  if (level === 'instance' && scope === 'all') defaultAttributes('study').forEach((t) => tags.add(t));
  for (const t of extra) tags.add(t);
  // Parents' RetrieveURLs and counts share tags with the level's own; attributeSource() picks the right one.
  return { level, tags: [...tags].filter((t) => attributeSource(t, level).from !== 'unavailable').sort(), includeAll };
}

/** Which keys of which level's JSONB dataset the database must hand back for a plan. */
export function datasetSelections(plan: ReturnPlan): Partial<Record<QidoLevel, DatasetSelection>> {
  if (plan.includeAll) {
    // An instance row holds its whole header; study and series rows hold their level's subset.
    if (plan.level === 'instance') return { instance: 'all' };
    if (plan.level === 'series') return { study: 'all', series: 'all' };
    return { study: 'all' };
  }
  const out: Partial<Record<QidoLevel, string[]>> = {};
  for (const tag of plan.tags) {
    const source = attributeSource(tag, plan.level);
    if (source.from === 'dataset') (out[source.level] ??= []).push(tag);
  }
  return out;
}

/** URLs of the resources a row stands for (PS3.18 10.4.1). */
function retrieveUrl(row: QidoRow, level: QidoLevel, baseUrl: string): string {
  let url = `${baseUrl}/studies/${encodeURIComponent(row.study_uid)}`;
  if (LEVEL_DEPTH[level] >= 1) url += `/series/${encodeURIComponent(row.series_uid ?? '')}`;
  if (level === 'instance') url += `/instances/${encodeURIComponent(row.sop_instance_uid ?? '')}`;
  return url;
}

function computed(tag: string, row: QidoRow, level: QidoLevel, baseUrl: string): DicomJsonElement | undefined {
  const list = (vr: string, v: unknown[]) => (v.length > 0 ? { vr, Value: v } : { vr });
  switch (tag) {
    case '00080056':
      return { vr: 'CS', Value: ['ONLINE'] };
    case '00080061':
      return list('CS', row.modalities ?? []);
    case '00080062':
      return list('UI', row.sop_classes ?? []);
    case '00201206':
      return { vr: 'IS', Value: [Number(row.study_num_series)] };
    case '00201208':
      return { vr: 'IS', Value: [Number(row.study_num_instances)] };
    case '00201209':
      return row.series_num_instances === undefined ? undefined : { vr: 'IS', Value: [Number(row.series_num_instances)] };
    case '00081190':
      return { vr: 'UR', Value: [retrieveUrl(row, level, baseUrl)] };
    default:
      return undefined;
  }
}

/** One result data set, attributes in ascending tag order (PS3.18 F.2). */
export function buildResult(row: QidoRow, plan: ReturnPlan, baseUrl: string): DicomJson {
  const { level } = plan;
  const datasets: Record<QidoLevel, DicomJson | undefined> = {
    study: row.study_dataset as DicomJson | undefined,
    series: row.series_dataset as DicomJson | undefined,
    instance: row.instance_dataset as DicomJson | undefined,
  };
  const out: DicomJson = {};
  if (plan.includeAll) {
    Object.assign(out, datasets.study, datasets.series, datasets.instance);
    for (const tag of ['00080056', '00080061', '00080062', '00201206', '00201208', '00201209', '00081190']) {
      if (attributeSource(tag, level).from !== 'computed') continue;
      const element = computed(tag, row, level, baseUrl);
      if (element) out[tag] = element;
    }
  } else {
    for (const tag of plan.tags) {
      const source = attributeSource(tag, level);
      let element: DicomJsonElement | undefined;
      if (source.from === 'computed') element = computed(tag, row, level, baseUrl);
      else if (source.from === 'dataset') element = datasets[source.level]?.[tag];
      if (!element) {
        // A requested attribute without a value is returned zero-length (PS3.4 C.2.2.1.2).
        const vr = dictionaryVr(tag);
        if (vr) element = { vr };
      }
      if (element) out[tag] = element;
    }
  }
  const instanceUrl = level === 'instance' ? retrieveUrl(row, level, baseUrl) : undefined;
  const sorted: DicomJson = {};
  for (const tag of Object.keys(out).sort()) {
    const element = withoutRelativeBulkData(out[tag], instanceUrl);
    if (element) sorted[tag] = element;
  }
  return sorted;
}

/**
 * Stored headers carry BulkDataURIs relative to their instance (`bulkdata/...`). Results at the
 * instance level get them absolute; study and series results, which have no instance, drop them.
 */
function withoutRelativeBulkData(element: DicomJsonElement, instanceUrl: string | undefined): DicomJsonElement | undefined {
  if (element.BulkDataURI !== undefined) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(element.BulkDataURI)) return element;
    return instanceUrl ? { ...element, BulkDataURI: `${instanceUrl}/${element.BulkDataURI}` } : undefined;
  }
  if (element.vr !== 'SQ' || !element.Value) return element;
  const items = element.Value.map((item) => {
    const copy: DicomJson = {};
    for (const [tag, child] of Object.entries(item as DicomJson)) {
      const kept = withoutRelativeBulkData(child, instanceUrl);
      if (kept) copy[tag] = kept;
    }
    return copy;
  });
  return { ...element, Value: items };
}
