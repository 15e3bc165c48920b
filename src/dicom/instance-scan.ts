/**
 * The state machine behind the instance scanner: preamble and File Meta, the header walked up
 * to the top-level Pixel Data (inflated first for Deflated Explicit VR Little Endian), then the
 * pixel data counted or, when encapsulated, read item header by item header.
 */
import { createInflateRaw, InflateRaw } from 'node:zlib';
import { DicomInstanceError, DicomJson, FileMetaInformation, FrameLocation, ScannedInstance, StatusCode } from './types';
import { DataSetWalker, PixelDataHeader, UNDEFINED_LENGTH } from './data-set-walker';
import { convertToDicomJson, tagKey } from './dicom-json';
import { EncapsulatedPixelDataReader } from './encapsulated-pixel-data';
import { PART10_PREFIX_LENGTH, hasPart10Prefix, readFileMeta, sniffEncoding, startsWithMetaGroup, transferSyntaxOf } from './file-meta';
import { FrameGeometry, locateEncapsulatedFrames, locateNativeFrames, readExtendedOffsetTable, unlocatableFrames } from './frame-locations';
import { GrowableBuffer } from './growable-buffer';
import { extractInstanceAttributes, readInteger } from './instance-attributes';
import type { ScannerOptions } from './instance-scanner';
import { EXPLICIT_LITTLE, TransferSyntaxTraits, describeTransferSyntax } from './transfer-syntax';

/** Room past maxHeaderBytes so that an element header starting just under the cap can still be read. */
const HEADER_SLACK = 16;

type Phase = 'prefix' | 'meta' | 'header' | 'inflating' | 'native' | 'encapsulated' | 'rest' | 'failed';

/** The scan of one instance, fed chunk by chunk; every failure is kept for `finish`, never thrown at the writer. */
export class InstanceScan {
  size = 0;
  private phase: Phase = 'prefix';
  private failure: DicomInstanceError | null = null;
  /** Stream offset the header needed when it outgrew the cap: if the stream ends before it, the instance was truncated instead. */
  private oversizedAt: number | null = null;
  private raw: GrowableBuffer;
  private walker: DataSetWalker | null = null;
  private hasFileMeta = false;
  private fileMeta: FileMetaInformation | undefined;
  private transferSyntaxUID = '';
  private traits: TransferSyntaxTraits = describeTransferSyntax('');
  private dataset: DicomJson | null = null;
  private extendedOffsetTable: number[] | null = null;
  private pixel: PixelDataHeader | null = null;
  private headerLength = 0;
  private encapsulated: EncapsulatedPixelDataReader | null = null;
  private inflater: InflateRaw | null = null;
  private inflated: GrowableBuffer | null = null;
  private inflaterClosed: Promise<void> = Promise.resolve();
  private waitingWrite: (() => void) | null = null;

  constructor(private readonly options: Required<ScannerOptions>) {
    this.raw = new GrowableBuffer(options.maxHeaderBytes + HEADER_SLACK);
  }

  /** Takes the next chunk; `done` is called at once, or when zlib has room for more (deflated data sets). */
  write(chunk: Buffer, done: () => void): void {
    const base = this.size;
    this.size += chunk.length;
    if (this.phase === 'inflating') {
      const inflater = this.inflater!;
      // Backpressure: wait until zlib has room, but never longer than the inflater lives.
      if (!inflater.write(chunk)) {
        this.waitingWrite = done;
        inflater.once('drain', () => this.releaseWrite());
        return;
      }
      return done();
    }
    this.guard(() => this.consume(chunk, 0, base));
    done();
  }

  /** Called once the part has ended; settles the outcome. */
  async finish(): Promise<ScannedInstance | DicomInstanceError> {
    if (this.phase === 'inflating') {
      this.inflater!.end();
      await this.inflaterClosed;
    }
    this.guard(() => {
      if (this.phase === 'prefix' || this.phase === 'meta' || this.phase === 'header') this.advanceHeader(true);
      if (this.phase === 'inflating') this.endInflatedHeader();
      if (this.phase === 'native' && this.size < this.pixel!.valueOffset + this.pixel!.length) {
        throw new DicomInstanceError(`truncated: Pixel Data declares ${this.pixel!.length} bytes, ${this.size - this.pixel!.valueOffset} arrived`, StatusCode.CannotUnderstand);
      }
      if (this.phase === 'encapsulated' && !this.encapsulated!.complete) {
        throw new DicomInstanceError('truncated: the stream ends inside encapsulated Pixel Data', StatusCode.CannotUnderstand);
      }
    });
    if (!this.failure) {
      try {
        return this.buildResult();
      } catch (err) {
        this.fail(err);
      }
    }
    if (this.oversizedAt !== null && this.size < this.oversizedAt) {
      return new DicomInstanceError(`truncated: an element runs to byte ${this.oversizedAt}, the stream has ${this.size}`, StatusCode.CannotUnderstand);
    }
    return this.failure!;
  }

  private consume(chunk: Buffer, start: number, base: number): void {
    switch (this.phase) {
      case 'prefix':
      case 'meta':
      case 'header': {
        const taken = this.raw.append(chunk, start, chunk.length);
        this.advanceHeader(false);
        const inHeader = this.phase === 'prefix' || this.phase === 'meta' || this.phase === 'header';
        if (taken < chunk.length - start) {
          if (inHeader) this.refuseOversizedHeader(Math.max(this.walker?.pos ?? 0, this.options.maxHeaderBytes + 1));
          else this.consume(chunk, start + taken, base);
        }
        return;
      }
      case 'inflating':
        this.inflater!.write(chunk.subarray(start));
        return;
      case 'encapsulated':
        this.encapsulated!.push(chunk, start, base);
        if (this.encapsulated!.complete) this.phase = 'rest'; // what follows (padding, zeros) is ignored
        return;
      default:
        return; // native pixel data, trailing bytes, or a failed instance: only counted
    }
  }

  /** Moves the header phases forward over the buffered bytes; `atEnd` when the stream is over. */
  private advanceHeader(atEnd: boolean): void {
    const raw = this.raw;
    if (this.phase === 'prefix') {
      if (raw.length < PART10_PREFIX_LENGTH && !atEnd) return;
      if (hasPart10Prefix(raw.buf, raw.length)) {
        this.hasFileMeta = true;
        this.startWalker(PART10_PREFIX_LENGTH, true);
      } else if (startsWithMetaGroup(raw.buf, 0, raw.length)) this.startWalker(0, true);
      else {
        // A bare data set (no preamble, no meta): its encoding is sniffed (PS3.10 7.1 does not apply).
        this.setTransferSyntax(transferSyntaxOf(sniffEncoding(raw.buf, 0, raw.length)));
        this.startWalker(0, false);
      }
    }
    const walker = this.walker!;
    if (this.phase === 'meta') {
      const outcome = walker.walk(raw.buf, raw.length);
      if (outcome.kind === 'need-more') {
        if (!atEnd) return this.checkHeaderSize();
        walker.finish(raw.buf, raw.length);
      }
      this.endMeta();
      if ((this.phase as Phase) !== 'header') return; // deflated: inflating from here on
    }
    const outcome = walker.walk(raw.buf, raw.length);
    if (outcome.kind === 'need-more') {
      if (!atEnd) return this.checkHeaderSize();
      walker.finish(raw.buf, raw.length);
      this.completeHeader(raw.buf, null, this.size);
    } else if (outcome.kind === 'padding') this.completeHeader(raw.buf, null, walker.pos);
    else if (outcome.kind === 'pixel-data') this.completeHeader(raw.buf, outcome.header, outcome.header.tagOffset);
    else throw new DicomInstanceError('File Meta group found inside the data set', StatusCode.CannotUnderstand);

    const bytes = raw.buf.subarray(0, raw.length);
    raw.release();
    const pixel = this.pixel;
    if (!pixel) this.phase = 'rest';
    else if (pixel.length === UNDEFINED_LENGTH) {
      this.encapsulated = new EncapsulatedPixelDataReader(this.traits.encoding.littleEndian, {
        maxFragments: this.options.maxFragments,
        maxOffsetTableBytes: this.options.maxHeaderBytes,
      });
      this.phase = 'encapsulated';
    } else this.phase = 'native';
    // Bytes already buffered past the Pixel Data header belong to the pixel phase (raw[k] is stream byte k).
    if (pixel) this.consume(bytes, pixel.valueOffset, 0);
  }

  private startWalker(start: number, meta: boolean): void {
    const limits = { maxDepth: this.options.maxSequenceDepth, maxElements: this.options.maxElements };
    // The File Meta group is always Explicit VR Little Endian (PS3.10 7.1).
    const encoding = meta ? EXPLICIT_LITTLE : this.traits.encoding;
    this.walker = new DataSetWalker(start, encoding, limits, { metaOnly: meta });
    this.phase = meta ? 'meta' : 'header';
  }

  private setTransferSyntax(uid: string): void {
    this.transferSyntaxUID = uid;
    this.traits = describeTransferSyntax(uid);
  }

  /** After group 0002: the data set's encoding comes from the meta, or is sniffed when the meta lacks it. */
  private endMeta(): void {
    const walker = this.walker!;
    const raw = this.raw;
    this.fileMeta = readFileMeta(walker.elements, raw.buf);
    this.setTransferSyntax(this.fileMeta.transferSyntaxUID ?? transferSyntaxOf(sniffEncoding(raw.buf, walker.pos, raw.length)));
    if (this.traits.deflated) return this.startInflating(walker.pos);
    walker.beginDataSet(this.traits.encoding);
    this.phase = 'header';
  }

  private checkHeaderSize(): void {
    // The top-level Pixel Data tag can only come at or after the walker's position.
    if (this.walker!.pos > this.options.maxHeaderBytes) this.refuseOversizedHeader(this.walker!.pos);
  }

  private refuseOversizedHeader(neededUpTo: number): void {
    this.oversizedAt = neededUpTo;
    throw new DicomInstanceError(`header larger than ${this.options.maxHeaderBytes} bytes`, StatusCode.OutOfResources);
  }

  /** Turns the parsed header into DICOM JSON and remembers where Pixel Data is. */
  private completeHeader(bytes: Buffer, pixel: PixelDataHeader | null, headerLength: number): void {
    const elements = this.walker!.elements;
    if (!elements.some((e) => e.tag >>> 16 !== 0x0002)) throw new DicomInstanceError('no data set', StatusCode.CannotUnderstand);
    const dataset = convertToDicomJson(elements, bytes);
    if (pixel) {
      const key = tagKey(pixel.tag);
      const vr = pixel.length === UNDEFINED_LENGTH ? 'OB' : pixel.vr === 'ox' ? 'OW' : pixel.vr;
      dataset[key] = { vr, BulkDataURI: `bulkdata/${key}` };
    }
    this.extendedOffsetTable = readExtendedOffsetTable(elements, bytes);
    this.dataset = dataset;
    this.pixel = pixel;
    this.headerLength = headerLength;
    this.walker = null;
  }

  /** Deflated Explicit VR Little Endian (PS3.5 A.5): inflate the data set, with the header cap bounding the output. */
  private startInflating(compressedStart: number): void {
    this.phase = 'inflating';
    this.inflated = new GrowableBuffer(this.options.maxHeaderBytes + HEADER_SLACK);
    this.walker = new DataSetWalker(0, EXPLICIT_LITTLE, { maxDepth: this.options.maxSequenceDepth, maxElements: this.options.maxElements });
    const inflater = createInflateRaw();
    this.inflater = inflater;
    this.inflaterClosed = new Promise((resolve) => inflater.once('close', resolve));
    inflater.on('data', (data: Buffer) => this.guard(() => this.onInflated(data)));
    inflater.on('error', (err) => this.guard(() => {
      throw new DicomInstanceError(`deflated data set cannot be inflated: ${err.message}`, StatusCode.CannotUnderstand);
    }));
    const compressed = this.raw.buf.subarray(compressedStart, this.raw.length);
    this.raw.release();
    if (compressed.length) inflater.write(compressed);
  }

  private onInflated(data: Buffer): void {
    if (this.phase !== 'inflating') return;
    const inflated = this.inflated!;
    inflated.append(data, 0, data.length);
    const outcome = this.walker!.walk(inflated.buf, inflated.length);
    if (outcome.kind === 'need-more') {
      if (this.walker!.pos > this.options.maxHeaderBytes) {
        throw new DicomInstanceError(`inflated header larger than ${this.options.maxHeaderBytes} bytes`, StatusCode.OutOfResources);
      }
      return;
    }
    if (outcome.kind === 'meta-end') throw new DicomInstanceError('unexpected meta-end', StatusCode.ProcessingFailure);
    // Pixel data of a deflated data set cannot be cut out of the blob by ranges: stop inflating, count the rest.
    this.completeHeader(inflated.buf, outcome.kind === 'pixel-data' ? outcome.header : null, 0);
    this.phase = 'rest';
    this.stopInflating();
  }

  /** The deflate stream ended without Pixel Data: the inflated data set must end cleanly. */
  private endInflatedHeader(): void {
    const inflated = this.inflated!;
    this.walker!.walk(inflated.buf, inflated.length);
    this.walker!.finish(inflated.buf, inflated.length);
    this.completeHeader(inflated.buf, null, 0);
    this.phase = 'rest';
    this.stopInflating();
  }

  private stopInflating(): void {
    const inflater = this.inflater;
    this.inflater = null;
    this.inflated?.release();
    if (inflater) {
      inflater.removeAllListeners('data');
      inflater.removeAllListeners('error');
      inflater.on('error', () => undefined);
      inflater.destroy();
    }
    this.releaseWrite();
  }

  private releaseWrite(): void {
    const done = this.waitingWrite;
    this.waitingWrite = null;
    done?.();
  }

  /** Runs a step; a throw fails the instance. */
  private guard(step: () => void): void {
    if (this.failure) return;
    try {
      step();
    } catch (err) {
      this.fail(err);
    }
  }

  /** First failure wins; from then on the rest of the stream is only counted. */
  private fail(err: unknown): void {
    this.failure ??=
      err instanceof DicomInstanceError
        ? err
        : new DicomInstanceError(`instance could not be scanned: ${(err as Error).message}`, StatusCode.ProcessingFailure);
    this.phase = 'failed';
    this.raw.release();
    this.walker = null;
    this.encapsulated = null;
    this.dataset = null;
    this.stopInflating();
  }

  private buildResult(): ScannedInstance {
    const dataset = this.dataset!;
    const deflated = this.traits.deflated;
    return {
      dataset,
      attributes: extractInstanceAttributes(dataset, this.transferSyntaxUID),
      frames: this.locateFrames(dataset),
      pixelDataOffset: this.pixel && !deflated ? this.pixel.valueOffset : null,
      // A deflated header is only readable by inflating from the start: it ends, in blob terms, at the end.
      headerLength: deflated ? this.size : this.headerLength,
      hasFileMeta: this.hasFileMeta,
      size: this.size,
      ...(this.fileMeta ? { fileMeta: this.fileMeta } : {}),
    };
  }

  private locateFrames(dataset: DicomJson): FrameLocation[] {
    const pixel = this.pixel;
    if (!pixel) return [];
    const geometry: FrameGeometry = {
      rows: readInteger(dataset, '00280010'),
      columns: readInteger(dataset, '00280011'),
      samplesPerPixel: readInteger(dataset, '00280002'),
      bitsAllocated: readInteger(dataset, '00280100'),
      numberOfFrames: positive(readInteger(dataset, '00280008')),
      numberOfFramesPresent: '00280008' in dataset,
      photometricInterpretation: readText(dataset, '00280004'),
    };
    if (this.traits.deflated) return unlocatableFrames(geometry.numberOfFrames ?? 1);
    if (pixel.length !== UNDEFINED_LENGTH) return locateNativeFrames(pixel.valueOffset, pixel.length, geometry);
    const reader = this.encapsulated!;
    return locateEncapsulatedFrames(
      {
        fragments: reader.fragments,
        basicOffsetTable: reader.basicOffsetTable,
        extendedOffsetTable: this.extendedOffsetTable,
        numberOfFrames: geometry.numberOfFrames,
      },
      this.traits,
    );
  }
}

function positive(n: number | null): number | null {
  return n !== null && n > 0 ? n : null;
}

/** First string value of an element, trimmed, or null. */
function readText(dataset: DicomJson, tag: string): string | null {
  const v = dataset[tag]?.Value?.[0];
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : null;
}
