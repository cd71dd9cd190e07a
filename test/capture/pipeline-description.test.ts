import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildPipelineDescription,
  findReplay,
  gstreamerRgbStride,
  packRgbRows,
  REPLAY_NAME,
  replayFileName,
  SINK_NAME,
} from "../../src/capture/pipeline-description.js";
import { isStpmdError } from "../../src/core/errors.js";

const TAIL =
  " ! videoconvert ! videoscale method=bilinear2" +
  ' ! capsfilter name=stpmd_caps caps="video/x-raw,format=RGB,width=256,height=192"' +
  " ! appsink name=stpmd_sink max-buffers=2 drop=true sync=false emit-signals=false";

describe("buildPipelineDescription", () => {
  test("appends conversion, scaling, RGB caps at the requested size and our appsink", () => {
    assert.equal(
      buildPipelineDescription("v4l2src device=/dev/video0", 256, 192),
      "v4l2src device=/dev/video0" + TAIL,
    );
    assert.equal(SINK_NAME, "stpmd_sink");
  });

  test("trims surrounding whitespace and passes multi-stage sources through unchanged", () => {
    const rtsp = "rtspsrc location=rtsp://10.0.0.5/stream ! rtph264depay ! h264parse ! avdec_h264";
    assert.equal(buildPipelineDescription(`  ${rtsp}\n`, 256, 192), rtsp + TAIL);
  });

  test("keeps a Jetson nvvidconv stage the user put in the source", () => {
    const jetson = "nvarguscamerasrc ! nvvidconv ! video/x-raw,width=256,height=192";
    // nvvidconv must stay last in the user's part: videoconvert cannot read the NVMM buffers before it
    assert.equal(buildPipelineDescription(jetson, 256, 192), jetson + TAIL);
  });

  const invalidSources: Array<[string, RegExp]> = [
    ["", /must be a non-empty/],
    ["   \t", /must be a non-empty/],
    ["videotestsrc ! appsink", /remove the appsink/],
    ["videotestsrc ! AppSink name=x", /remove the appsink/],
    ["videotestsrc ! identity name=stpmd_sink", /reserved element name "stpmd_sink"/],
    ["videotestsrc ! capsfilter name=stpmd_caps", /reserved element name "stpmd_caps"/],
    ["videotestsrc !", /must not start or end with "!"/],
    ["! videotestsrc", /must not start or end with "!"/],
  ];
  for (const [source, expected] of invalidSources) {
    test(`rejects source ${JSON.stringify(source)} naming the config key`, () => {
      assert.throws(
        () => buildPipelineDescription(source, 64, 48, 'cameras[2] (id "line3")'),
        (err: unknown) =>
          isStpmdError(err) &&
          err.code === "ERR_CONFIG_INVALID" &&
          err.message.startsWith('cameras[2] (id "line3").source: ') &&
          expected.test(err.message),
      );
    });
  }

  test("does not mistake names and paths that merely contain 'appsink' for an appsink element", () => {
    const tail = TAIL.replace("width=256,height=192", "width=8,height=8");
    for (const source of [
      "filesrc location=/data/appsinks/x.png ! pngdec",
      "filesrc location=/data/appsink/x.png ! pngdec",
      'filesrc location="/data/my appsink/x.png" ! pngdec ! identity name=not-an-appsink',
    ]) {
      assert.equal(buildPipelineDescription(source, 8, 8), source + tail, source);
    }
    // while an appsink element is refused wherever it stands in the chain
    assert.throws(
      () => buildPipelineDescription("videotestsrc ! appsink ! fakesink", 8, 8),
      /remove the appsink/,
    );
  });

  for (const [width, height, key] of [
    [0, 48, "width"],
    [64, -1, "height"],
    [64.5, 48, "width"],
    [64, Number.NaN, "height"],
  ] as const) {
    test(`rejects ${key} in ${width}×${height}`, () => {
      assert.throws(
        () => buildPipelineDescription("videotestsrc", width, height, "cameras[0]"),
        (err: unknown) =>
          isStpmdError(err) &&
          err.code === "ERR_CONFIG_INVALID" &&
          err.message.startsWith(`cameras[0].${key}: `),
      );
    });
  }
});

describe("packRgbRows", () => {
  test("GStreamer's RGB stride rounds each row up to 4 bytes", () => {
    assert.equal(gstreamerRgbStride(64), 192); // 192 is already aligned
    assert.equal(gstreamerRgbStride(250), 752); // 750 → 752
    assert.equal(gstreamerRgbStride(1), 4); // 3 → 4
    assert.equal(gstreamerRgbStride(3), 12); // 9 → 12
  });

  test("returns the same bytes, without copying, when rows are not padded", () => {
    const data = Buffer.from(Array.from({ length: 4 * 2 * 3 }, (_, i) => i));
    const packed = packRgbRows(data, 4, 2);
    assert.deepEqual(Array.from(packed), Array.from(data));
    assert.equal(packed.buffer, data.buffer);
  });

  test("drops the padding of odd-width rows (250 px: 750 data + 2 padding bytes per row)", () => {
    const width = 250;
    const height = 3;
    const stride = 752;
    const padded = new Uint8Array(stride * height).fill(0xee); // 0xee marks padding
    for (let row = 0; row < height; row++) {
      for (let i = 0; i < width * 3; i++) padded[row * stride + i] = (row * 7 + i) % 200;
    }
    const packed = packRgbRows(padded, width, height);
    assert.equal(packed.length, width * height * 3);
    for (let row = 0; row < height; row++) {
      for (let i = 0; i < width * 3; i++) {
        assert.equal(packed[row * width * 3 + i], (row * 7 + i) % 200, `row ${row} byte ${i}`);
      }
    }
    assert.ok(!packed.includes(0xee), "no padding byte leaked into the packed frame");
  });

  test("accepts a padded frame whose last row carries no padding", () => {
    // width 1 → stride 4: row 0 = 3 bytes + 1 padding byte, row 1 = 3 bytes and nothing after it.
    const data = Uint8Array.from([10, 11, 12, 0xee, 20, 21, 22]);
    assert.deepEqual(Array.from(packRgbRows(data, 1, 2)), [10, 11, 12, 20, 21, 22]);
  });

  test("rejects a frame too short for its size", () => {
    assert.throws(() => packRgbRows(new Uint8Array(100), 250, 10), RangeError);
  });
});

describe("findReplay", () => {
  test("reads a multifilesrc replay's settings and names its element", () => {
    const source =
      "multifilesrc location=/data/%03d.png index=4 loop=true caps=image/png,framerate=10/1 ! pngdec ! identity sync=true";
    const found = findReplay(source);
    assert.deepEqual(found?.replay, {
      element: REPLAY_NAME,
      location: "/data/%03d.png",
      startIndex: 0,
      index: 4,
      stopIndex: -1,
      loop: true,
      png: true,
      sizeKept: true,
    });
    assert.equal(found?.source, source.replace("multifilesrc", `multifilesrc name=${REPLAY_NAME}`));
  });

  test("keeps the user's element name, quoted locations and multifilesrc's defaults", () => {
    const found = findReplay(
      `multifilesrc name=cam location="/my data/f_%d.jpg" start-index=2 stop-index=9 ! jpegdec`,
    );
    assert.equal(
      found?.source,
      `multifilesrc name=cam location="/my data/f_%d.jpg" start-index=2 stop-index=9 ! jpegdec`,
    );
    assert.deepEqual(found?.replay, {
      element: "cam",
      location: "/my data/f_%d.jpg",
      startIndex: 2,
      index: 2,
      stopIndex: 9,
      loop: false,
      png: false,
      sizeKept: true,
    });
    assert.equal(findReplay('multifilesrc location="/a/%05d.png"')?.replay.location, "/a/%05d.png");
  });

  test("knows whether the decoded files reach the ROI's crop at their own size", () => {
    const sizeKept = (source: string) => findReplay(source)?.replay.sizeKept;
    const files = "multifilesrc location=/d/%03d.png caps=image/png,framerate=5/1";
    assert.equal(
      sizeKept(`${files} ! pngdec ! videoconvert ! video/x-raw,format=RGB ! identity sync=true`),
      true,
    );
    assert.equal(sizeKept(`${files} ! pngdec ! videoscale ! video/x-raw,width=1920,height=1080`), false);
    assert.equal(sizeKept(`${files} ! pngdec ! video/x-raw,width=640`), false);
    assert.equal(sizeKept(`${files} ! pngdec ! videoflip method=clockwise`), false);
    // as the camera sees it: the user's source, then stpmd's crop and scaling, which do not count
    assert.equal(
      sizeKept(
        `${files} ! pngdec ! videocrop left=1 top=1 right=-1 bottom=-1 ! video/x-raw,width=16,height=16 ! videoscale`,
      ),
      true,
    );
  });

  test("is null for sources that are not a numbered file replay", () => {
    assert.equal(findReplay("videotestsrc is-live=true"), null);
    assert.equal(findReplay("multifilesrc location=/data/still.png ! pngdec"), null);
  });

  test("replayFileName formats the index as multifilesrc's printf does", () => {
    assert.equal(replayFileName("/d/%03d.png", 7), "/d/007.png");
    assert.equal(replayFileName("/d/%d.png", 12), "/d/12.png");
    assert.equal(replayFileName("/d/img%05d.png", 123456), "/d/img123456.png");
    assert.equal(replayFileName("/d/still.png", 1), null);
  });
});

describe("native caps", () => {
  test("with an ROI, the exact size: the ROI capped at the long side, aspect kept", () => {
    assert.match(
      buildPipelineDescription("videotestsrc", 64, 64, "cam", { x: 16, y: 8, width: 160, height: 144 }, 112),
      /caps="video\/x-raw,format=RGB,width=112,height=101"/,
    );
    assert.match(
      buildPipelineDescription("videotestsrc", 64, 64, "cam", { x: 0, y: 0, width: 300, height: 200 }, 2048),
      /caps="video\/x-raw,format=RGB,width=300,height=200"/,
      "below the cap: as it is",
    );
  });

  test("without an ROI, a range GStreamer fixates from the source's size", () => {
    assert.match(
      buildPipelineDescription("videotestsrc", 64, 64, "cam", undefined, 2048),
      /caps="video\/x-raw,format=RGB,width=\[1,2048\],height=\[1,2048\],pixel-aspect-ratio=1\/1"/,
    );
  });
});
