import { CommitmentRequestError, eventReportOf, parseCommitmentRequest } from '../../../src/dimse/storage-commitment';
import { judgeContext } from '../../../src/dimse/negotiation';

const ref = (c: string, i: string) => ({ '00081150': { vr: 'UI', Value: [c] }, '00081155': { vr: 'UI', Value: [i] } });

describe('Storage Commitment requests and reports (PS3.4 J.3)', () => {
  test('an N-ACTION data set gives the Transaction UID and the referenced instances', () => {
    expect(parseCommitmentRequest({ '00081195': { vr: 'UI', Value: ['1.2.3'] }, '00081199': { vr: 'SQ', Value: [ref('1.2.840.10008.5.1.4.1.1.2', '1.2.3.4')] } })).toEqual({
      transactionUID: '1.2.3',
      references: [{ sopClassUID: '1.2.840.10008.5.1.4.1.1.2', sopInstanceUID: '1.2.3.4' }],
    });
  });

  test('missing or malformed parts are refused with the N-ACTION status', () => {
    const status = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        return (err as CommitmentRequestError).status;
      }
      return undefined;
    };
    expect(status(() => parseCommitmentRequest({ '00081199': { vr: 'SQ', Value: [ref('1.2', '1.2.3')] } }))).toBe(0x0120);
    expect(status(() => parseCommitmentRequest({ '00081195': { vr: 'UI', Value: ['x/y'] }, '00081199': { vr: 'SQ', Value: [ref('1.2', '1.2.3')] } }))).toBe(0x0106);
    expect(status(() => parseCommitmentRequest({ '00081195': { vr: 'UI', Value: ['1.2'] }, '00081199': { vr: 'SQ', Value: [] } }))).toBe(0x0120);
    expect(status(() => parseCommitmentRequest({ '00081195': { vr: 'UI', Value: ['1.2'] }, '00081199': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: ['1.2.3'] } }] } }))).toBe(0x0120);
  });

  test('the report: event type 1 when all are committed, 2 with a Failed SOP Sequence otherwise', () => {
    const ok = eventReportOf({ transactionUID: '1.2', committed: [{ sopClassUID: '1.1', sopInstanceUID: '1.1.1' }], failed: [] }, 'LAKE');
    expect(ok.eventTypeId).toBe(1);
    expect(ok.dataSet).toEqual({ '00081195': { vr: 'UI', Value: ['1.2'] }, '00080054': { vr: 'AE', Value: ['LAKE'] }, '00081199': { vr: 'SQ', Value: [ref('1.1', '1.1.1')] } });
    const partial = eventReportOf({ transactionUID: '1.2', committed: [], failed: [{ sopClassUID: '1.1', sopInstanceUID: '1.1.2', reason: 0x0112 }] }, 'LAKE');
    expect(partial.eventTypeId).toBe(2);
    expect(partial.dataSet).toEqual({ '00081195': { vr: 'UI', Value: ['1.2'] }, '00081198': { vr: 'SQ', Value: [{ ...ref('1.1', '1.1.2'), '00081197': { vr: 'US', Value: [0x0112] } }] } });
  });

  test('the Storage Commitment context is accepted for peers that store', () => {
    expect(judgeContext('1.2.840.10008.1.20.1', ['1.2.840.10008.1.2'], ['store'])).toEqual({ result: 'accept', transferSyntaxUID: '1.2.840.10008.1.2' });
    expect(judgeContext('1.2.840.10008.1.20.1', ['1.2.840.10008.1.2'], ['find'])).toEqual({ result: 'abstract-syntax-not-supported' });
  });
});
