import { auditOutcomeOf, storeStatusOf, storeStatusOfError } from '../../../src/dimse/store-status';
import { HttpError, ServiceUnavailableError } from '../../../src/http/errors';

const item = (extra: Record<string, unknown> = {}) => ({ '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] }, '00081155': { vr: 'UI', Value: ['2.25.1'] }, ...extra });

describe('C-STORE status from a store response (PS3.4 B.2.3)', () => {
  test('stored: success; stored with a warning reason: that warning and its text', () => {
    expect(storeStatusOf({ body: { '00081199': { vr: 'SQ', Value: [item()] } }, warnings: [] })).toEqual({ status: 0x0000 });
    expect(storeStatusOf({ body: { '00081199': { vr: 'SQ', Value: [item({ '00081196': { vr: 'US', Value: [0xb000] } })] } }, warnings: ['kept as version 2'] })).toEqual({
      status: 0xb000,
      comment: 'kept as version 2',
    });
  });

  test('failed: its failure reason and text', () => {
    expect(storeStatusOf({ body: { '00081198': { vr: 'SQ', Value: [item({ '00081197': { vr: 'US', Value: [0xa900] } })] } }, warnings: ['StudyInstanceUID is missing'] })).toEqual({
      status: 0xa900,
      comment: 'StudyInstanceUID is missing',
    });
  });

  test('an unavailable backing service or an oversized data set is Out of Resources; an unreadable one Cannot Understand; the rest Processing Failure', () => {
    expect(storeStatusOfError(new ServiceUnavailableError('the index database is unavailable'))).toEqual({ status: 0xa700, comment: 'the index database is unavailable' });
    expect(storeStatusOfError(new HttpError(413, 'too large')).status).toBe(0xa700);
    expect(storeStatusOfError(new HttpError(400, 'the request body ended before it was complete')).status).toBe(0xc000);
    expect(storeStatusOfError(new Error('boom'))).toEqual({ status: 0x0110, comment: 'the instance could not be stored' });
  });

  test('audit outcome: success and warnings 0, refusals 4, our failures 8', () => {
    expect([0x0000, 0xb000, 0xb007, 0x0124, 0xa900, 0xc000, 0xa700, 0xa7ff, 0x0110].map(auditOutcomeOf)).toEqual(['0', '0', '0', '4', '4', '4', '8', '8', '8']);
  });
});
