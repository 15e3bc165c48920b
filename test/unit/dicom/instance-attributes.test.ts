/**
 * The index columns read from an instance (InstanceAttributes): study/series/instance match
 * keys, ophthalmic laterality from functional groups (PS3.3 C.7.6.16.2.8) and device type
 * codes (PS3.3 C.8.17.5), with unreadable values as null.
 */
import { element, identity, item, part10, readShared, scanBytes, sequence, text } from './dicom-fixtures';

/** A Frame Anatomy Sequence item with one laterality, wrapped in a functional group item. */
function frameGroup(laterality: string): Buffer {
  return item(sequence(0x00209071, [item(element(0x00209072, 'CS', text(laterality)))]));
}

function code(value: string): Buffer {
  return item(Buffer.concat([element(0x00080100, 'SH', text(value)), element(0x00080102, 'SH', text('DCM'))]));
}

describe('extracted attributes', () => {
  it('collects distinct frame lateralities from shared and per-frame functional groups', async () => {
    const dataSet = Buffer.concat([
      identity(),
      element(0x00200062, 'CS', text('B')),
      sequence(0x52009229, [frameGroup('R')]),
      sequence(0x52009230, [frameGroup('L'), frameGroup('R'), frameGroup('L')], true),
      sequence(0x00220015, [code('OCT'), code('SLO')]),
    ]);
    const { attributes } = await scanBytes(part10('1.2.840.10008.1.2.1', dataSet));
    expect(attributes.imageLaterality).toBe('B');
    expect(attributes.frameLateralities).toEqual(['R', 'L']);
    expect(attributes.acquisitionDeviceTypeCodes).toEqual(['OCT', 'SLO']);
  });

  it('reads study, series and image columns of a real CT (wg04 CT1)', async () => {
    const { attributes } = await scanBytes(readShared('transfer-syntax/wg04__CT1_UNC.dcm'));
    expect(attributes).toMatchObject({
      sopClassUID: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUID: '1.2.840.10008.1.2.1',
      specificCharacterSet: 'ISO_IR 100',
      modality: 'CT',
      rows: 512,
      columns: 512,
      bitsAllocated: 16,
      samplesPerPixel: 1,
      photometricInterpretation: 'MONOCHROME2',
      numberOfFrames: null,
      frameLateralities: [],
      acquisitionDeviceTypeCodes: [],
    });
    expect(attributes.studyInstanceUID).toMatch(/^1\.3\.6\.1\.4\.1\.5962\.1\.2\./);
  });

  it('gives null, not an error, for an unreadable Number of Frames (badVR) and an empty Rows', async () => {
    expect((await scanBytes(readShared('malformed/pydicom__badVR.dcm'))).attributes.numberOfFrames).toBeNull();
    const invalidRows = await scanBytes(readShared('malformed/orthanc__DummyCTInvalidRows.dcm'));
    expect(invalidRows.attributes.rows).toBeNull();
    expect(invalidRows.attributes.columns).toBe(512);
  });

  it('keeps markup in text values verbatim (escaping belongs to whoever renders them)', async () => {
    const { attributes } = await scanBytes(readShared('malformed/orthanc__2017-06-27-XSSInjection.dcm'));
    expect(attributes.patientName).toContain('<script>');
  });

  it('reads the multi-frame count of an enhanced MR', async () => {
    const { attributes, frames } = await scanBytes(readShared('multiframe/pydicom-data__emri_small.dcm'));
    expect(attributes.numberOfFrames).toBe(10);
    expect(frames).toHaveLength(10);
  });
});
