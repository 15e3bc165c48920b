import fs from 'node:fs';
import path from 'node:path';

/** One DICOM file listed in shared/data/MANIFEST.md. */
export interface ManifestDicomFile {
  /** Path relative to shared/data. */
  relPath: string;
  section: string;
  sopClass: string;
  notes: string;
}

const SECTION_FOLDERS: Array<[RegExp, string]> = [
  [/^## DICOM - transfer-syntax matrix/, 'dicom/transfer-syntax'],
  [/^## DICOM - modalities/, 'dicom/modalities'],
  [/^## DICOM - multi-frame/, 'dicom/multiframe'],
  [/^## DICOM - character sets/, 'dicom/charset'],
  [/^## DICOM - ophthalmic/, 'dicom/ophthalmic'],
  [/^## DICOM - malformed/, 'dicom/malformed'],
];

/**
 * Reads the DICOM tables of MANIFEST.md: every row of the single-file sections and of the
 * series sections (whose folder is in their `### dicom/series/<name>/` heading). Rows whose
 * SOP class column is '-' (text files) are left out.
 */
export function readManifestDicomFiles(dataRoot: string): ManifestDicomFile[] {
  const text = fs.readFileSync(path.join(dataRoot, 'MANIFEST.md'), 'utf8');
  const out: ManifestDicomFile[] = [];
  let folder: string | null = null;
  let section = '';
  let columns: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('## ') || line.startsWith('### ')) {
      folder = null;
      section = line.replace(/^#+ /, '');
      columns = [];
      const single = SECTION_FOLDERS.find(([re]) => re.test(line));
      if (single) folder = single[1];
      const series = /^### (dicom\/series\/[^/]+)\//.exec(line);
      if (series) folder = series[1];
      continue;
    }
    if (!folder || !line.startsWith('|')) continue;
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells[0] === 'file') {
      columns = cells;
      continue;
    }
    if (/^-+$/.test(cells[0]) || columns.length === 0) continue;
    const col = (name: string) => cells[columns.indexOf(name)] ?? '';
    const sopClass = col('SOP class');
    if (sopClass === '-' || sopClass === '') {
      if (!/\.dcm(\.gz)?$/.test(cells[0])) continue;
    }
    out.push({ relPath: `${folder}/${cells[0]}`, section, sopClass, notes: col('notes') });
  }
  return out;
}
