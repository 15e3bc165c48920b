/** VOI LUT functions (PS3.3 C.11.2.1.2) and the grayscale lookup table. */
import { applyWindow, buildGrayscaleLut, parseVoiFunction, windowFromRange } from '../../../src/dicom/pixel-window';

describe('LINEAR (PS3.3 C.11.2.1.2.1)', () => {
  const w = { center: 40, width: 400, function: 'linear' as const };

  test('below the window is 0, above is 255', () => {
    expect(applyWindow(-1000, w)).toBe(0);
    expect(applyWindow(3000, w)).toBe(255);
  });

  test('the boundaries follow c - 0.5 +- (w - 1) / 2', () => {
    // x <= c - 0.5 - (w-1)/2 = 40 - 0.5 - 199.5 = -160 -> 0
    expect(applyWindow(-160, w)).toBe(0);
    // x > c - 0.5 + (w-1)/2 = 239 -> 255
    expect(applyWindow(239.01, w)).toBe(255);
    expect(applyWindow(239, w)).toBeCloseTo(255, 5);
  });

  test('the center maps to mid-gray', () => {
    expect(applyWindow(40, w)).toBeCloseTo(((40 - 39.5) / 399 + 0.5) * 255, 10);
  });

  test('width 1 is a threshold', () => {
    const t = { center: 100, width: 1, function: 'linear' as const };
    expect(applyWindow(99, t)).toBe(0);
    expect(applyWindow(99.5, t)).toBe(0);
    expect(applyWindow(100, t)).toBe(255);
  });
});

describe('LINEAR_EXACT and SIGMOID', () => {
  test('linear exact spans [c - w/2, c + w/2] exactly', () => {
    const w = { center: 0, width: 100, function: 'linear_exact' as const };
    expect(applyWindow(-50, w)).toBe(0);
    expect(applyWindow(0, w)).toBeCloseTo(127.5, 10);
    expect(applyWindow(50, w)).toBeCloseTo(255, 10);
    expect(applyWindow(50.001, w)).toBe(255);
  });

  test('sigmoid is 127.5 at the center and saturates away from it', () => {
    const w = { center: 100, width: 50, function: 'sigmoid' as const };
    expect(applyWindow(100, w)).toBeCloseTo(127.5, 10);
    expect(applyWindow(100 + 25, w)).toBeCloseTo(255 / (1 + Math.exp(-2)), 10);
    expect(applyWindow(-10000, w)).toBeCloseTo(0, 5);
  });

  test('function names accept DICOM and PS3.18 spellings', () => {
    expect(parseVoiFunction('LINEAR_EXACT')).toBe('linear_exact');
    expect(parseVoiFunction('linear-exact')).toBe('linear_exact');
    expect(parseVoiFunction('Sigmoid')).toBe('sigmoid');
    expect(parseVoiFunction('gamma')).toBeNull();
  });
});

describe('grayscale LUT', () => {
  test('applies rescale slope/intercept before the window', () => {
    // stored 0..4095 with intercept -1024: modality -1024..3071; window 0/2 exact -> stored 1023 -> 0, 1025 -> 255
    const lut = buildGrayscaleLut(0, 4095, { slope: 1, intercept: -1024 }, { center: 0, width: 2, function: 'linear_exact' }, false);
    expect(lut[1023]).toBe(0);
    expect(lut[1024]).toBe(128);
    expect(lut[1025]).toBe(255);
  });

  test('MONOCHROME1 inverts', () => {
    const w = windowFromRange(0, 255);
    const normal = buildGrayscaleLut(0, 255, { slope: 1, intercept: 0 }, w, false);
    const inverted = buildGrayscaleLut(0, 255, { slope: 1, intercept: 0 }, w, true);
    expect(normal[0]).toBe(0);
    expect(inverted[0]).toBe(255);
    expect(inverted[255]).toBe(0);
  });

  test('a constant image gets a usable window', () => {
    const w = windowFromRange(7, 7);
    expect(w.width).toBeGreaterThan(0);
  });
});
