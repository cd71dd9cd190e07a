import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { randomTeacher } from "../src/bundle/random-teacher.js";
import { encodeModel } from "../src/onnx/onnx-graph.js";
import { normalFrames, tempDir } from "./helpers/tiny-data.js";

function stpmd(...args: string[]) {
  const r = spawnSync(process.execPath, ["dist/src/main.cjs", ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("bad input gives one line naming the file and the problem, exit 1, no stack trace", async () => {
  const dir = await tempDir();
  const notOnnx = path.join(dir, "teacher.onnx");
  await writeFile(notOnnx, "definitely not protobuf");
  const cases: [string[], RegExp][] = [
    [
      ["retrain", "--frames", dir, "--teacher", path.join(dir, "missing.onnx"), "--out", path.join(dir, "b")],
      /missing\.onnx: teacher ONNX cannot be read/,
    ],
    [
      ["retrain", "--frames", dir, "--teacher", notOnnx, "--out", path.join(dir, "b")],
      /teacher\.onnx: not a valid ONNX model/,
    ],
    [["eval", "--model", dir, "--data", dir], /not a model bundle: manifest\.json cannot be read/],
  ];
  for (const [args, pattern] of cases) {
    const r = stpmd(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

test("bad geometry options get one line naming the option (ROI outside the images, tile larger than the scaled image, size not a multiple of 16)", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(3, 64, path.join(dir, "frames"));
  const teacher = path.join(dir, "teacher.onnx");
  await writeFile(teacher, encodeModel(randomTeacher(1, 4)));
  const retrainWith = (...extra: string[]) =>
    stpmd(
      "retrain",
      "--frames",
      frames,
      "--teacher",
      teacher,
      "--out",
      path.join(dir, "b"),
      "--epochs",
      "1",
      ...extra,
    );
  const cases: [string[], RegExp][] = [
    [["--roi", "40,40,32,32"], /--roi 40,40,32,32: lies outside the 64×64 images of/],
    [["--tile", "128"], /--tile 128: tile 128 is larger than the scaled image \(64×64\)/],
    [["--tile", "64", "--scale", "0.5"], /--tile 64: tile 64 is larger than the scaled image \(32×32\)/],
    [["--image-size", "250x64"], /--image-size 250x64: width 250 must be a multiple of 16/],
    [["--roi", "1,2,3"], /--roi 1,2,3: must be four non-negative integers/],
  ];
  for (const [args, pattern] of cases) {
    const r = retrainWith(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    // the problem on one line (commander adds its usage hint below option errors)
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("(run with --help"));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

test("a time budget of 0, below 0 or not a number gets one line naming --time-budget", () => {
  for (const value of ["0", "-5", "soon"]) {
    const r = stpmd("retrain", "--frames", "x", "--teacher", "y", "--out", "z", "--time-budget", value);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("(run with --help"));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, new RegExp(`'${value}' is invalid\\. --time-budget must be a number > 0$`));
  }
});

test("help explains every command and option", () => {
  const top = stpmd("--help");
  for (const cmd of ["retrain", "eval", "run", "check-config", "demo"])
    assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
  const retrain = stpmd("retrain", "--help");
  for (const opt of [
    "--frames",
    "--teacher",
    "--out",
    "--epochs",
    "--batch-size",
    "--lr",
    "--image-size",
    "--seed",
    "--time-budget",
  ]) {
    assert.match(retrain.stdout, new RegExp(opt));
  }
  const bad = stpmd("retrain", "--frames", "x", "--teacher", "y", "--out", "z", "--epochs", "zero");
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--epochs must be an integer/);
});

test("check-config lists every problem with its key", async () => {
  const dir = await tempDir();
  const file = path.join(dir, "bad.yaml");
  await writeFile(file, "model: {}\ncameras: []\nmqtt:\n  url: mqtt://x\n  qos: 1\n");
  const r = stpmd("check-config", file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /model\.bundle/);
  assert.match(r.stderr, /cameras/);
  assert.match(r.stderr, /mqtt\.qos: unknown key/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});
