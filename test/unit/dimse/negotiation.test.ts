import { isStorableTransferSyntax, isStorageSopClass, judgeAssociation, judgeContext, VERIFICATION_SOP_CLASS } from '../../../src/dimse/negotiation';

const OPT = '1.2.840.10008.5.1.4.1.1.77.1.5.4';
const IMPLICIT = '1.2.840.10008.1.2';
const EXPLICIT = '1.2.840.10008.1.2.1';
const J2K_LOSSLESS = '1.2.840.10008.1.2.4.90';

describe('presentation contexts (PS3.8 9.3.3.2)', () => {
  test('storage SOP Classes are accepted in the first transfer syntax the requester proposed that is stored unchanged', () => {
    expect(judgeContext(OPT, [J2K_LOSSLESS, EXPLICIT, IMPLICIT])).toEqual({ result: 'accept', transferSyntaxUID: J2K_LOSSLESS });
    expect(judgeContext(OPT, [IMPLICIT, EXPLICIT])).toEqual({ result: 'accept', transferSyntaxUID: IMPLICIT });
    expect(judgeContext(OPT, ['1.2.840.10008.1.2.99', EXPLICIT])).toEqual({ result: 'accept', transferSyntaxUID: EXPLICIT });
  });

  test('a storage class offered only in transfer syntaxes we do not store is refused as such', () => {
    expect(judgeContext(OPT, ['1.2.840.10008.1.2.99', '1.2.3.4'])).toEqual({ result: 'transfer-syntaxes-not-supported' });
  });

  test('query/retrieve classes are accepted for the peers allowed the operation, in an uncompressed syntax', () => {
    const STUDY_FIND = '1.2.840.10008.5.1.4.1.2.2.1';
    const PATIENT_GET = '1.2.840.10008.5.1.4.1.2.1.3';
    const STUDY_MOVE = '1.2.840.10008.5.1.4.1.2.2.2';
    expect(judgeContext(STUDY_FIND, [J2K_LOSSLESS, EXPLICIT], ['find'])).toEqual({ result: 'accept', transferSyntaxUID: EXPLICIT });
    expect(judgeContext(PATIENT_GET, [IMPLICIT], ['get'])).toEqual({ result: 'accept', transferSyntaxUID: IMPLICIT });
    expect(judgeContext(STUDY_MOVE, [IMPLICIT], ['find', 'get'])).toEqual({ result: 'abstract-syntax-not-supported' });
    expect(judgeContext(STUDY_FIND, [J2K_LOSSLESS], ['find'])).toEqual({ result: 'transfer-syntaxes-not-supported' });
    // A C-GET requester proposes the storage classes it receives: accepted without the store service.
    expect(judgeContext(OPT, [EXPLICIT], ['get'])).toEqual({ result: 'accept', transferSyntaxUID: EXPLICIT });
    expect(judgeContext(OPT, [EXPLICIT], ['find'])).toEqual({ result: 'abstract-syntax-not-supported' });
  });

  test('query/retrieve (without the service), worklist and other services are not offered; Verification is', () => {
    expect(judgeContext('1.2.840.10008.5.1.4.1.2.2.1', [IMPLICIT])).toEqual({ result: 'abstract-syntax-not-supported' }); // Study Root FIND
    expect(judgeContext('1.2.840.10008.5.1.4.31', [IMPLICIT])).toEqual({ result: 'abstract-syntax-not-supported' }); // Modality Worklist
    expect(judgeContext('1.2.840.10008.1.3.10', [EXPLICIT])).toEqual({ result: 'abstract-syntax-not-supported' }); // DICOMDIR
    expect(judgeContext(VERIFICATION_SOP_CLASS, [EXPLICIT, IMPLICIT])).toEqual({ result: 'accept', transferSyntaxUID: IMPLICIT });
  });

  test('storage classes: the 1.2.840.10008.5.1.4.1.1 arc and the others of PS3.4 B.5; not private or malformed UIDs', () => {
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.2')).toBe(true);
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.77.1.5.1')).toBe(true);
    expect(isStorageSopClass('1.2.840.10008.5.1.4.38.1')).toBe(true);
    expect(isStorageSopClass('1.2.276.0.19.55.1.5.1.1.1')).toBe(false);
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.2/../x')).toBe(false);
  });

  test('transfer syntaxes stored as received', () => {
    for (const ts of [IMPLICIT, EXPLICIT, '1.2.840.10008.1.2.1.99', '1.2.840.10008.1.2.2', '1.2.840.10008.1.2.5', '1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.201', '1.2.840.10008.1.2.8.1']) {
      expect(isStorableTransferSyntax(ts)).toBe(true);
    }
    expect(isStorableTransferSyntax('1.2.840.10008.1.2.4')).toBe(false);
    expect(isStorableTransferSyntax('1.2.3')).toBe(false);
  });
});

describe('association acceptance (PS3.8 7.1.1.9 called and calling AE titles)', () => {
  const config = {
    aeTitle: 'IMAGING_LAKE',
    peers: [
      { aeTitle: 'OCT_1', projects: ['glaucoma'], services: ['store' as const] },
      { aeTitle: 'PACS', host: '10.0.0.5', projects: [], services: ['store' as const] },
    ],
  };

  test('a configured peer calling our AE title is accepted, titles compared without their padding', () => {
    expect(judgeAssociation(config, 'IMAGING_LAKE    ', ' OCT_1', '192.168.1.9')).toEqual({ accept: true, peer: config.peers[0] });
  });

  test('a peer bound to an address is accepted only from it (IPv4 seen through IPv6 included)', () => {
    expect(judgeAssociation(config, 'IMAGING_LAKE', 'PACS', '::ffff:10.0.0.5')).toMatchObject({ accept: true });
    expect(judgeAssociation(config, 'IMAGING_LAKE', 'PACS', '10.0.0.6')).toMatchObject({ accept: false, reason: 'calling-ae-not-recognized', message: expect.stringMatching(/not allowed from 10\.0\.0\.6/) });
  });

  test('an unknown calling AE title, another called AE title, and titles differing in case are refused', () => {
    expect(judgeAssociation(config, 'IMAGING_LAKE', 'STRANGER', '127.0.0.1')).toMatchObject({ accept: false, reason: 'calling-ae-not-recognized' });
    expect(judgeAssociation(config, 'ANY-SCP', 'OCT_1', '127.0.0.1')).toMatchObject({ accept: false, reason: 'called-ae-not-recognized' });
    expect(judgeAssociation(config, 'IMAGING_LAKE', 'oct_1', '127.0.0.1')).toMatchObject({ accept: false });
  });
});
