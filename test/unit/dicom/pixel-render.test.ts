/** From decoded frames to 8-bit images: grayscale pipeline, palette and YCbCr color (PS3.4 N.2, PS3.3 C.7.6.3). */
import { decodeFrame } from '../../../src/dicom/pixel-decoder';
import type { DecodedFrame } from '../../../src/dicom/pixel-frame';
import { readPalette, readPixelAttributes, readPresentation } from '../../../src/dicom/pixel-presentation';
import { renderFrame, UnsupportedRenderingError } from '../../../src/dicom/pixel-render';
import type { DicomJson } from '../../../src/dicom/types';
import { readShared, scanBytes } from './dicom-fixtures';

async function load(relative: string): Promise<{ frame: DecodedFrame; dataset: DicomJson }> {
  const bytes = readShared(relative);
  const scanned = await scanBytes(bytes);
  const raw = Buffer.concat(scanned.frames[0]!.map((r) => bytes.subarray(r.offset, r.offset + r.length)));
  const frame = await decodeFrame(raw, scanned.attributes.transferSyntaxUID, readPixelAttributes(scanned.dataset));
  return { frame, dataset: scanned.dataset };
}

function histogramSpread(data: Buffer): number {
  return new Set(data).size;
}

describe('grayscale', () => {
  test('CT uses the stored window by default, and a requested window changes the output', async () => {
    const { frame, dataset } = await load('transfer-syntax/wg04__CT1_UNC.dcm');
    const presentation = readPresentation(dataset);
    const byDefault = renderFrame(frame, presentation);
    const bone = renderFrame(frame, presentation, { window: { center: 500, width: 2000, function: 'linear' } });
    expect(byDefault.channels).toBe(1);
    expect(byDefault.data.length).toBe(512 * 512);
    expect(histogramSpread(byDefault.data)).toBeGreaterThan(50);
    expect(bone.data.equals(byDefault.data)).toBe(false);
  });

  test('MONOCHROME1 renders inverted: the same window on MONOCHROME2 gives the complement', async () => {
    const { frame, dataset } = await load('malformed/fodicom__CR-MONO1-10-chest.dcm');
    const presentation = readPresentation(dataset);
    const mono1 = renderFrame(frame, presentation);
    const mono2 = renderFrame({ ...frame, attributes: { ...frame.attributes, photometricInterpretation: 'MONOCHROME2' } }, presentation);
    for (let i = 0; i < mono1.data.length; i += 997) expect(mono1.data[i]).toBe(255 - mono2.data[i]);
  });

  test('without a stored window the frame min/max spans 0..255', async () => {
    const { frame, dataset } = await load('transfer-syntax/pydicom__MR_small.dcm');
    const out = renderFrame(frame, { ...readPresentation(dataset), windows: [] });
    expect(Math.min(...out.data)).toBe(0);
    expect(Math.max(...out.data)).toBe(255);
  });

  test('1-bit segmentation frames render as black and white', async () => {
    const { frame, dataset } = await load('modalities/pydicom-data__liver.dcm');
    const out = renderFrame(frame, readPresentation(dataset));
    expect([...new Set(out.data)].sort((a, b) => a - b)).toEqual([0, 255]);
  });

  test('Float Pixel Data (parametric map) is windowed over its float range', async () => {
    const { frame, dataset } = await load('modalities/pydicom-data__parametric_map_float.dcm');
    expect(frame.attributes.floatingPoint).toBe(true);
    const out = renderFrame(frame, readPresentation(dataset));
    expect(out.data.length).toBe(128 * 128);
    expect(new Set(out.data).size).toBeGreaterThan(20);
  });

  test('rescale and window come from the functional groups of enhanced objects', () => {
    const groups: DicomJson = {
      '00289145': { vr: 'SQ', Value: [{ '00281052': { vr: 'DS', Value: [-1024] }, '00281053': { vr: 'DS', Value: [1] } }] },
      '00289132': { vr: 'SQ', Value: [{ '00281050': { vr: 'DS', Value: [40] }, '00281051': { vr: 'DS', Value: [400] } }] },
    };
    const p = readPresentation({ '00281050': { vr: 'DS', Value: [1] }, '00281051': { vr: 'DS', Value: [2] } }, [groups, undefined]);
    expect(p).toMatchObject({ rescaleIntercept: -1024, rescaleSlope: 1, windows: [{ center: 40, width: 400 }] });
  });
});

describe('color', () => {
  test('PALETTE COLOR maps through the palette to RGB', async () => {
    const { frame, dataset } = await load('modalities/fodicom__TestPattern_Palette.dcm');
    const presentation = readPresentation(dataset);
    presentation.palette = readPalette(dataset, () => undefined) ?? undefined;
    expect(presentation.palette).toBeDefined();
    const out = renderFrame(frame, presentation);
    expect(out.channels).toBe(3);
    expect(out.data.length).toBe(640 * 400 * 3);
    // A test pattern in color: some pixels have channels that differ.
    let colored = 0;
    for (let i = 0; i < out.data.length; i += 3) if (out.data[i] !== out.data[i + 1] || out.data[i + 1] !== out.data[i + 2]) colored++;
    expect(colored).toBeGreaterThan(1000);
  });

  test('PALETTE COLOR without a palette is refused as unrenderable', async () => {
    const { frame, dataset } = await load('modalities/fodicom__TestPattern_Palette.dcm');
    expect(() => renderFrame(frame, readPresentation(dataset))).toThrow(UnsupportedRenderingError);
  });

  test('YBR_FULL converts to RGB: gray stays gray, Cr pushes red', () => {
    const attributes = { rows: 1, columns: 2, samplesPerPixel: 3, bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, planarConfiguration: 0, photometricInterpretation: 'YBR_FULL' };
    const out = renderFrame({ data: Buffer.from([128, 128, 128, 100, 128, 200]), attributes }, readPresentation({}));
    expect([...out.data.subarray(0, 3)]).toEqual([128, 128, 128]);
    expect(out.data[3]).toBeGreaterThan(out.data[4]);
    expect(out.data[3]).toBeGreaterThan(out.data[5]);
  });

  test('native YBR_FULL_422 (Y1 Y2 Cb Cr) and planar RGB render', () => {
    const base = { rows: 1, columns: 2, samplesPerPixel: 3, bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0 };
    const ybr = renderFrame({ data: Buffer.from([50, 200, 128, 128]), attributes: { ...base, planarConfiguration: 0, photometricInterpretation: 'YBR_FULL_422' } }, readPresentation({}));
    expect([...ybr.data]).toEqual([50, 50, 50, 200, 200, 200]);
    const planar = renderFrame({ data: Buffer.from([1, 2, 3, 4, 5, 6]), attributes: { ...base, planarConfiguration: 1, photometricInterpretation: 'RGB' } }, readPresentation({}));
    expect([...planar.data]).toEqual([1, 3, 5, 2, 4, 6]);
  });
});
