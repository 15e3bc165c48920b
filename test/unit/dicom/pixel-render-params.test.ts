/** Rendering query parameters (PS3.18 8.3.5.1): window, viewport, quality, and what a viewport means for an image. */
import { parseRenderParameters, RenderParameterError, resolveViewport } from '../../../src/dicom/pixel-render-params';

const parse = (q: Record<string, unknown>) => parseRenderParameters(q);

describe('window', () => {
  test('center,width defaults to linear', () => {
    expect(parse({ window: '40,400' }).window).toEqual({ center: 40, width: 400, function: 'linear' });
  });

  test('decimals, negative centers and a function', () => {
    expect(parse({ window: '-600.5,1500,sigmoid' }).window).toEqual({ center: -600.5, width: 1500, function: 'sigmoid' });
    expect(parse({ window: '0,1,linear-exact' }).window?.function).toBe('linear_exact');
  });

  test.each([['40'], ['a,b'], ['40,400,gamma'], ['40,0'], ['40,0.5,linear'], ['40,400,linear,x']])('"%s" is refused with a message', (value) => {
    expect(() => parse({ window: value })).toThrow(RenderParameterError);
    expect(() => parse({ window: value })).toThrow(/window/);
  });

  test('a repeated parameter is refused', () => {
    expect(() => parse({ window: ['1,2', '3,4'] })).toThrow(/given once/);
  });
});

describe('viewport', () => {
  test('vw,vh', () => {
    expect(parse({ viewport: '256,128' }).viewport).toEqual({ width: 256, height: 128 });
  });

  test('vw,vh,sx,sy,sw,sh with a flip', () => {
    expect(parse({ viewport: '100,100,10,20,-50,60' }).viewport).toEqual({ width: 100, height: 100, region: { x: 10, y: 20, width: -50, height: 60 } });
  });

  test.each([['0,10'], ['10'], ['10,10,1,2,3'], ['10,10,-1,0,5,5'], ['10,10,0,0,0,5'], ['99999,10'], ['1.5,2']])('"%s" is refused', (value) => {
    expect(() => parse({ viewport: value })).toThrow(/viewport/);
  });

  test('fits the region into the viewport keeping its aspect ratio', () => {
    expect(resolveViewport({ width: 128, height: 128 }, 512, 256)).toMatchObject({ width: 128, height: 64 });
    expect(resolveViewport({ width: 100, height: 400 }, 50, 50)).toMatchObject({ width: 100, height: 100 });
  });

  test('negative sw / sh extend left / up from sx / sy and flip', () => {
    const plan = resolveViewport({ width: 10, height: 10, region: { x: 100, y: 50, width: -100, height: -50 } }, 200, 100);
    expect(plan.crop).toEqual({ left: 0, top: 0, width: 100, height: 50 });
    expect(plan.flipHorizontal).toBe(true);
    expect(plan.flipVertical).toBe(true);
  });

  test('a region outside the image is refused', () => {
    expect(() => resolveViewport({ width: 10, height: 10, region: { x: 500, y: 0, width: 20, height: 20 } }, 512, 512)).toThrow(/outside/);
  });

  test('no viewport: the image size', () => {
    expect(resolveViewport(undefined, 640, 400)).toMatchObject({ width: 640, height: 400, flipHorizontal: false });
  });
});

describe('quality and others', () => {
  test('quality 1..100', () => {
    expect(parse({ quality: '75' }).quality).toBe(75);
    expect(() => parse({ quality: '0' })).toThrow(/quality/);
    expect(() => parse({ quality: '101' })).toThrow(/quality/);
    expect(() => parse({ quality: 'high' })).toThrow(/quality/);
  });

  test('unknown parameters are ignored', () => {
    expect(parse({ annotation: 'patient', foo: 'bar' })).toEqual({});
  });
});
