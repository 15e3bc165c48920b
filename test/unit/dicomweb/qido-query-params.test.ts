import { HttpError } from '../../../src/http/errors';
import { DEFAULT_LIMIT, MAX_LIMIT, parseQidoQuery } from '../../../src/dicomweb/query-params';

const conditionOn = (q: ReturnType<typeof parseQidoQuery>, column: string) => q.conditions.find((c) => c.column.column === column);

function badRequest(query: Record<string, unknown>, level: 'study' | 'series' | 'instance' = 'study'): HttpError {
  try {
    parseQidoQuery(query, level);
  } catch (err) {
    if (err instanceof HttpError) return err;
    throw err;
  }
  throw new Error('expected a 400');
}

describe('QIDO-RS query parameters (PS3.18 8.3.4)', () => {
  describe('attribute IDs', () => {
    test('a keyword resolves to its column', () => {
      const q = parseQidoQuery({ PatientID: 'P1' }, 'study');
      expect(conditionOn(q, 'patient_id')?.anyOf).toEqual([{ type: 'equal', value: 'P1' }]);
    });

    test('an 8-digit tag resolves like its keyword', () => {
      const q = parseQidoQuery({ '00100020': 'P1' }, 'study');
      expect(conditionOn(q, 'patient_id')?.anyOf).toEqual([{ type: 'equal', value: 'P1' }]);
    });

    test('a lower-case hex tag is accepted', () => {
      const q = parseQidoQuery({ '0020000d': '1.2.3' }, 'study');
      expect(conditionOn(q, 'study_uid')?.anyOf).toEqual([{ type: 'equal', value: '1.2.3' }]);
    });

    test('a sequence path by tags reaches the device type code column', () => {
      const q = parseQidoQuery({ '00220015.00080100': 'A-00E8A' }, 'series');
      expect(conditionOn(q, 'device_type_codes')?.column.level).toBe('series');
    });

    test('a sequence path by keywords is the same key', () => {
      const q = parseQidoQuery({ 'AcquisitionDeviceTypeCodeSequence.CodeValue': 'A-00E8A' }, 'series');
      expect(conditionOn(q, 'device_type_codes')?.anyOf).toEqual([{ type: 'equal', value: 'A-00E8A' }]);
    });

    test('a tag with seven digits is a 400', () => {
      expect(badRequest({ '0010002': 'x' }).message).toMatch(/"0010002" is not a DICOM keyword or an 8-digit hexadecimal tag/);
    });

    test('a tag in (gggg,eeee) form is a 400', () => {
      expect(badRequest({ '(0010,0020)': 'x' }).status).toBe(400);
    });

    test('an unknown keyword is ignored with a warning', () => {
      const q = parseQidoQuery({ PatientNme: 'x' }, 'study');
      expect(q.conditions).toEqual([]);
      expect(q.warnings).toEqual(['query key "PatientNme" is not a known DICOM attribute or QIDO-RS parameter and was ignored']);
    });

    test('a known attribute without an index is ignored with a warning', () => {
      const q = parseQidoQuery({ PatientAge: '040Y' }, 'study');
      expect(q.conditions).toEqual([]);
      expect(q.warnings[0]).toBe('PatientAge (00101010) is not supported as a match key and was ignored');
    });

    test('an unsupported sequence path is ignored with a warning', () => {
      const q = parseQidoQuery({ '00400275.00401001': 'RP1' }, 'series');
      expect(q.warnings[0]).toMatch(/RequestAttributesSequence\.RequestedProcedureID \(00400275\.00401001\) is not supported/);
    });

    test('a lower-level key is kept for a relational study search', () => {
      const q = parseQidoQuery({ Modality: 'MR' }, 'study');
      expect(conditionOn(q, 'modality')?.column.level).toBe('series');
      expect(q.returnTags.has('00080060')).toBe(false);
    });

    test('a matched key is returned', () => {
      expect(parseQidoQuery({ Laterality: 'R' }, 'series').returnTags.has('00200060')).toBe(true);
    });

    test('an empty value is a return key, not a filter', () => {
      const q = parseQidoQuery({ StudyDescription: '' }, 'study');
      expect(q.conditions).toEqual([]);
      expect(q.returnTags.has('00081030')).toBe(true);
    });

    test('a repeated key is AND-ed', () => {
      const q = parseQidoQuery({ StudyDate: ['20240101-', '-20241231'] }, 'study');
      expect(q.conditions).toHaveLength(2);
    });
  });

  describe('values', () => {
    test('* alone is universal matching', () => {
      expect(parseQidoQuery({ PatientID: '*' }, 'study').conditions).toEqual([]);
    });

    test('* and ? become LIKE wildcards', () => {
      const q = parseQidoQuery({ PatientID: 'AB*C?' }, 'study');
      expect(conditionOn(q, 'patient_id')?.anyOf).toEqual([{ type: 'wildcard', pattern: 'AB%C_' }]);
    });

    test('% _ and \\ are escaped for LIKE', () => {
      const q = parseQidoQuery({ StudyDescription: '100%_x*' }, 'study');
      expect(conditionOn(q, 'study_description')?.anyOf).toEqual([{ type: 'wildcard', pattern: '100\\%\\_x%' }]);
    });

    test('a value without wildcards keeps % literally as an equality', () => {
      const q = parseQidoQuery({ StudyDescription: '100%' }, 'study');
      expect(conditionOn(q, 'study_description')?.anyOf).toEqual([{ type: 'equal', value: '100%' }]);
    });

    test('backslash-separated values are OR-ed', () => {
      const q = parseQidoQuery({ Modality: 'OPT\\OP' }, 'series');
      expect(conditionOn(q, 'modality')?.anyOf).toEqual([
        { type: 'equal', value: 'OPT' },
        { type: 'equal', value: 'OP' },
      ]);
    });

    test('a UID list may be comma separated', () => {
      const q = parseQidoQuery({ StudyInstanceUID: '1.2.3,1.2.4' }, 'study');
      expect(conditionOn(q, 'study_uid')?.anyOf).toEqual([
        { type: 'equal', value: '1.2.3' },
        { type: 'equal', value: '1.2.4' },
      ]);
    });

    test('a UID list may be backslash separated', () => {
      const q = parseQidoQuery({ SOPInstanceUID: '1.2.3\\1.2.4' }, 'instance');
      expect(conditionOn(q, 'sop_instance_uid')?.anyOf).toHaveLength(2);
    });

    test('a UID list with an empty member is a 400', () => {
      expect(badRequest({ StudyInstanceUID: '1.2.3,,1.2.4' }).message).toMatch(/empty value/);
    });

    test('a wildcard inside a UID is a 400', () => {
      expect(badRequest({ StudyInstanceUID: '1.2.*' }).message).toMatch(/wildcards are not allowed in UID matching/);
    });

    test('an integer key takes integers', () => {
      const q = parseQidoQuery({ SeriesNumber: '401' }, 'series');
      expect(conditionOn(q, 'series_number')?.anyOf).toEqual([{ type: 'equal', value: 401 }]);
    });

    test('a non-integer for an IS key is a 400', () => {
      expect(badRequest({ InstanceNumber: '1A' }, 'instance').message).toMatch(/InstanceNumber: "1A" is not an integer/);
    });
  });

  describe('dates and times (PS3.4 C.2.2.2.5)', () => {
    test('a single date is an equality on the ISO date', () => {
      const q = parseQidoQuery({ StudyDate: '20240115' }, 'study');
      expect(conditionOn(q, 'study_date')?.anyOf).toEqual([{ type: 'equal', value: '2024-01-15' }]);
    });

    test('a closed date range', () => {
      const q = parseQidoQuery({ StudyDate: '20240101-20241231' }, 'study');
      expect(conditionOn(q, 'study_date')?.anyOf).toEqual([{ type: 'range', from: '2024-01-01', to: '2024-12-31' }]);
    });

    test('an open-ended date range from a date', () => {
      const q = parseQidoQuery({ StudyDate: '20240101-' }, 'study');
      expect(conditionOn(q, 'study_date')?.anyOf).toEqual([{ type: 'range', from: '2024-01-01', to: undefined }]);
    });

    test('an open-ended date range up to a date', () => {
      const q = parseQidoQuery({ StudyDate: '-20240101' }, 'study');
      expect(conditionOn(q, 'study_date')?.anyOf).toEqual([{ type: 'range', from: undefined, to: '2024-01-01' }]);
    });

    test('a malformed date is a 400', () => {
      expect(badRequest({ StudyDate: '2024x' }).message).toBe('StudyDate: "2024x" is not a date (YYYYMMDD)');
    });

    test('an impossible calendar date is a 400', () => {
      expect(badRequest({ StudyDate: '20240230' }).status).toBe(400);
    });

    test('a date range that ends before it starts is a 400', () => {
      expect(badRequest({ StudyDate: '20241231-20240101' }).message).toMatch(/ends before it starts/);
    });

    test('a lone hyphen is a 400', () => {
      expect(badRequest({ StudyDate: '-' }).status).toBe(400);
    });

    test('a time range keeps DICOM time strings', () => {
      const q = parseQidoQuery({ StudyTime: '080000-170000.5' }, 'study');
      expect(conditionOn(q, 'study_time')?.anyOf).toEqual([{ type: 'range', from: '080000', to: '170000.5' }]);
    });

    test('a single time is a range at its own precision', () => {
      const q = parseQidoQuery({ StudyTime: '0930' }, 'study');
      expect(conditionOn(q, 'study_time')?.anyOf).toEqual([{ type: 'range', from: '0930', to: '0930' }]);
    });

    test('a time with colons (ACR-NEMA) is accepted', () => {
      const q = parseQidoQuery({ StudyTime: '09:30:00' }, 'study');
      expect(conditionOn(q, 'study_time')?.anyOf).toEqual([{ type: 'range', from: '093000', to: '093000' }]);
    });

    test('a time range at coarser precision may end at its start hour', () => {
      const q = parseQidoQuery({ StudyTime: '1015-10' }, 'study');
      expect(conditionOn(q, 'study_time')?.anyOf).toEqual([{ type: 'range', from: '1015', to: '10' }]);
    });

    test('an invalid hour is a 400', () => {
      expect(badRequest({ StudyTime: '250000' }).message).toMatch(/is not a time/);
    });

    test('a datetime range', () => {
      const q = parseQidoQuery({ AcquisitionDateTime: '20230301093000-20230301093100' }, 'instance');
      expect(conditionOn(q, 'acquisition_datetime')?.anyOf).toEqual([{ type: 'range', from: '20230301093000', to: '20230301093100' }]);
    });

    test('a datetime with a UTC offset is refused rather than misread', () => {
      expect(badRequest({ AcquisitionDateTime: '20230301093000+0100' }, 'instance').message).toMatch(/UTC offsets/);
    });

    test('a date list is a 400', () => {
      expect(badRequest({ StudyDate: '20240101\\20240102' }).message).toMatch(/list of DA values is not supported/);
    });
  });

  describe('person names', () => {
    test('a PN value is normalised: case and accents folded', () => {
      const q = parseQidoQuery({ PatientName: 'Buc^Jérôme' }, 'study');
      expect(conditionOn(q, 'patient_name_norm')?.anyOf).toEqual([{ type: 'equal', value: 'buc^jerome' }]);
    });

    test('a PN wildcard is normalised too', () => {
      const q = parseQidoQuery({ PatientName: '*DOE*' }, 'study');
      expect(conditionOn(q, 'patient_name_norm')?.anyOf).toEqual([{ type: 'wildcard', pattern: '%doe%' }]);
    });

    test('fuzzymatching turns a name into word prefixes', () => {
      const q = parseQidoQuery({ PatientName: 'Jér^Bu', fuzzymatching: 'true' }, 'study');
      expect(conditionOn(q, 'patient_name_norm')?.anyOf).toEqual([{ type: 'words', words: ['jer', 'bu'] }]);
    });

    test('fuzzymatching drops the wildcards OHIF adds', () => {
      const q = parseQidoQuery({ PatientName: '*doe*', fuzzymatching: 'true' }, 'study');
      expect(conditionOn(q, 'patient_name_norm')?.anyOf).toEqual([{ type: 'words', words: ['doe'] }]);
    });

    test('fuzzymatching does not change non-PN keys', () => {
      const q = parseQidoQuery({ PatientID: 'AB*', fuzzymatching: 'true' }, 'study');
      expect(conditionOn(q, 'patient_id')?.anyOf).toEqual([{ type: 'wildcard', pattern: 'AB%' }]);
    });

    test('fuzzymatching other than true/false is a 400', () => {
      expect(badRequest({ fuzzymatching: 'yes' }).message).toBe('fuzzymatching must be true or false, got "yes"');
    });
  });

  describe('includefield', () => {
    test('comma-separated and repeated, by keyword and tag', () => {
      const q = parseQidoQuery({ includefield: ['00081030,PatientAge', 'InstitutionName'] }, 'study');
      expect([...q.returnTags].sort()).toEqual(['00080080', '00081030', '00101010']);
    });

    test('all', () => {
      expect(parseQidoQuery({ includefield: 'all' }, 'series').includeAll).toBe(true);
    });

    test('an attribute the study level does not keep is reported, not silently dropped', () => {
      const q = parseQidoQuery({ includefield: '00080060' }, 'study');
      expect(q.returnTags.size).toBe(0);
      expect(q.warnings).toEqual(['includefield Modality (00080060) is not available at the study level and was ignored']);
    });

    test('any attribute is available at the instance level', () => {
      expect(parseQidoQuery({ includefield: 'Rows' }, 'instance').returnTags.has('00280010')).toBe(true);
    });

    test('a sequence path returns the top-level sequence', () => {
      expect([...parseQidoQuery({ includefield: '00400275.00401001' }, 'series').returnTags]).toEqual(['00400275']);
    });

    test('an unknown keyword warns', () => {
      expect(parseQidoQuery({ includefield: 'NoSuchThing' }, 'study').warnings[0]).toMatch(/"NoSuchThing" is not a known DICOM attribute/);
    });

    test('a malformed tag is a 400', () => {
      expect(badRequest({ includefield: '0008103' }).status).toBe(400);
    });
  });

  describe('limit and offset', () => {
    test('defaults', () => {
      const q = parseQidoQuery({}, 'study');
      expect([q.limit, q.offset, q.serverLimited]).toEqual([DEFAULT_LIMIT, 0, true]);
    });

    test('explicit values', () => {
      const q = parseQidoQuery({ limit: '101', offset: '202' }, 'study');
      expect([q.limit, q.offset, q.serverLimited]).toEqual([101, 202, false]);
    });

    test('a limit above the maximum is capped with a warning', () => {
      const q = parseQidoQuery({ limit: String(MAX_LIMIT + 1) }, 'study');
      expect(q.limit).toBe(MAX_LIMIT);
      expect(q.warnings[0]).toMatch(/exceeds the maximum/);
    });

    test('limit=-1 is a 400', () => {
      expect(badRequest({ limit: '-1' }).message).toBe('limit must be a positive integer, got "-1"');
    });

    test('limit=0 is a 400', () => {
      expect(badRequest({ limit: '0' }).status).toBe(400);
    });

    test('offset=abc is a 400', () => {
      expect(badRequest({ offset: 'abc' }).message).toBe('offset must be a non-negative integer, got "abc"');
    });

    test('a repeated limit is a 400', () => {
      expect(badRequest({ limit: ['1', '2'] }).message).toMatch(/given more than once/);
    });
  });
});
