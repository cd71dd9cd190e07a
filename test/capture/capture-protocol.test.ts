import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ChildEvent,
  decodeFrame,
  eventMessage,
  frameHeader,
  MESSAGE_EVENT,
  MESSAGE_FRAME,
  MessageReader,
  nativeHeader,
} from "../../src/capture/capture-protocol.js";
import type { SourceFrame } from "../../src/capture/frame-source.js";

/** The bytes a capture process writes for `frame` of run `run`. */
function frameBytes(run: number, frame: SourceFrame): Buffer {
  const { head, pixels } = frameHeader(run, frame);
  return Buffer.concat([head, pixels]);
}

function read(chunks: Buffer[]): Array<{ type: number; body: Buffer }> {
  const out: Array<{ type: number; body: Buffer }> = [];
  const reader = new MessageReader((type, body) => out.push({ type, body: Buffer.from(body) }));
  for (const chunk of chunks) reader.feed(chunk);
  return out;
}

describe("capture protocol", () => {
  const rgb = Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => i);
  const rgba = Uint8Array.from({ length: 5 * 2 * 4 }, (_, i) => 255 - i);
  const event: ChildEvent = {
    t: "warning",
    run: 7,
    kind: "bad_file",
    message: "replay file /x/003.png is empty",
  };
  const stream = Buffer.concat([
    frameBytes(7, { captureTs: 1_796_000_000_123, rgb }),
    eventMessage(event),
    frameBytes(8, { captureTs: 1_796_000_000_456, original: { width: 5, height: 2, rgba }, wanted: true }),
    frameBytes(8, { captureTs: 1_796_000_000_789, rgb, native: { ref: 4_000_000_000, width: 9, height: 7 } }),
    Buffer.concat(Object.values(nativeHeader(4_000_000_000, { width: 4, height: 3, rgb }))),
    frameBytes(9, { captureTs: 1_796_000_000_999, original: { width: 4, height: 3, rgb }, wanted: true }),
  ]);

  function check(messages: Array<{ type: number; body: Buffer }>, how: string): void {
    assert.deepEqual(
      messages.map((m) => m.type),
      [MESSAGE_FRAME, MESSAGE_EVENT, MESSAGE_FRAME, MESSAGE_FRAME, MESSAGE_FRAME, MESSAGE_FRAME],
      how,
    );
    assert.deepEqual(
      decodeFrame(messages[0]!.body),
      { run: 7, frame: { captureTs: 1_796_000_000_123, rgb } },
      how,
    );
    assert.deepEqual(JSON.parse(messages[1]!.body.toString("utf8")), event, how);
    assert.deepEqual(
      decodeFrame(messages[2]!.body),
      {
        run: 8,
        frame: { captureTs: 1_796_000_000_456, original: { width: 5, height: 2, rgba }, wanted: true },
      },
      how,
    );
    assert.deepEqual(
      decodeFrame(messages[3]!.body),
      {
        run: 8,
        frame: { captureTs: 1_796_000_000_789, rgb, native: { ref: 4_000_000_000, width: 9, height: 7 } },
      },
      how,
    );
    assert.deepEqual(
      decodeFrame(messages[4]!.body),
      { ref: 4_000_000_000, native: { width: 4, height: 3, rgb } },
      how,
    );
    assert.deepEqual(
      decodeFrame(messages[5]!.body),
      {
        run: 9,
        frame: { captureTs: 1_796_000_000_999, original: { width: 4, height: 3, rgb }, wanted: true },
      },
      how,
    );
  }

  test("messages come out whole and in order however the stream is cut", () => {
    check(read([stream]), "one chunk");
    for (let cut = 1; cut < stream.byteLength; cut++) {
      check(read([stream.subarray(0, cut), stream.subarray(cut)]), `cut at ${cut}`);
    }
    check(
      read(Array.from({ length: stream.byteLength }, (_, i) => stream.subarray(i, i + 1))),
      "a byte at a time",
    );
  });

  test("a message within one chunk is a view of it, not a copy", () => {
    const bodies: Buffer[] = [];
    new MessageReader((_, body) => bodies.push(body)).feed(stream);
    assert.equal(bodies[0]!.buffer, stream.buffer);
  });
});
