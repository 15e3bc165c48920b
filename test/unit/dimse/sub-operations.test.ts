import { buildFileMeta } from '../../../src/dicomweb/wado-rs';
import { afterFileMeta, chooseTransferSyntax, countStatus, proposedSyntaxes, type SubOperationCounts } from '../../../src/dimse/sub-operations';

const EXPLICIT = '1.2.840.10008.1.2.1';
const IMPLICIT = '1.2.840.10008.1.2';
const JPEG_LOSSLESS = '1.2.840.10008.1.2.4.70';

describe('C-STORE sub-operations of a retrieve', () => {
  test('an instance goes out as stored when accepted, else in a syntax the transcoder makes, else not at all', () => {
    const toExplicit = (from: string, to: string) => to === EXPLICIT && from !== EXPLICIT;
    expect(chooseTransferSyntax(JPEG_LOSSLESS, [EXPLICIT, JPEG_LOSSLESS], toExplicit)).toBe(JPEG_LOSSLESS);
    expect(chooseTransferSyntax(JPEG_LOSSLESS, [IMPLICIT, EXPLICIT], toExplicit)).toBe(EXPLICIT);
    expect(chooseTransferSyntax(EXPLICIT, [IMPLICIT], toExplicit)).toBeUndefined();
    expect(chooseTransferSyntax(JPEG_LOSSLESS, [EXPLICIT])).toBeUndefined();
  });

  test('a C-MOVE destination is offered the stored syntaxes and Explicit VR Little Endian', () => {
    expect(proposedSyntaxes([JPEG_LOSSLESS])).toEqual([JPEG_LOSSLESS, EXPLICIT]);
    expect(proposedSyntaxes([EXPLICIT, IMPLICIT])).toEqual([EXPLICIT, IMPLICIT]);
  });

  test('statuses count as completed, warning (Bxxx) or failed, the failed UIDs listed', () => {
    const counts: SubOperationCounts = { remaining: 4, completed: 0, failed: 0, warning: 0, failedUids: [] };
    countStatus(counts, '1', 0x0000);
    countStatus(counts, '2', 0xb007);
    countStatus(counts, '3', 0xa700);
    countStatus(counts, '4', 0x0110);
    expect(counts).toEqual({ remaining: 0, completed: 1, warning: 1, failed: 2, failedUids: ['3', '4'] });
  });

  test('the data set of a Part 10 file starts after its File Meta Information', () => {
    const meta = buildFileMeta({ sopClassUID: '1.2.3', sopInstanceUID: '1.2.3.4', transferSyntaxUID: EXPLICIT });
    const dataSet = Buffer.from([0x08, 0x00, 0x18, 0x00, 0x55, 0x49, 0x08, 0x00, ...Buffer.from('1.2.3.4\0')]);
    expect(afterFileMeta(Buffer.concat([meta, dataSet])).equals(dataSet)).toBe(true);
    expect(() => afterFileMeta(meta.subarray(0, 140))).toThrow(/File Meta Information/);
  });
});
