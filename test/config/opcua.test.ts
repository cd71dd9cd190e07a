import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { formatConfigSummary, loadConfig } from "../../src/config/index.js";
import { isStpmdError } from "../../src/core/errors.js";
import { tempDir } from "../helpers/tiny-data.js";

const BASE = [
  "model: {bundle: /opt/models/bottle}",
  "cameras: [{id: line1, source: videotestsrc}]",
  "mqtt: {url: 'mqtt://broker:1883'}",
].join("\n");

async function configFile(opcua: string): Promise<{ dir: string; file: string }> {
  const dir = await tempDir("stpmd-opcua-config-");
  const file = path.join(dir, "stpmd.yaml");
  await writeFile(file, `${BASE}\nopcua: ${opcua}\n`);
  return { dir, file };
}

function problemsOf(file: string, env: Record<string, string> = {}): string {
  try {
    loadConfig(file, env);
  } catch (err) {
    assert.ok(isStpmdError(err));
    return err.message;
  }
  assert.fail("the config was accepted");
}

test("opcua user password files take $CREDENTIALS_DIRECTORY; the pki_dir is relative to the file", async () => {
  const { dir, file } = await configFile(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the loader's ${NAME} expansion is what is tested
    "{enabled: true, pki_dir: pki, users: [{username: plc, password_file: '${CREDENTIALS_DIRECTORY}/opcua_plc'}]}",
  );
  await writeFile(path.join(dir, "opcua_plc"), "pw\n");
  const cfg = loadConfig(file, { CREDENTIALS_DIRECTORY: dir });
  assert.equal(cfg.opcua.users[0]!.password_file, path.join(dir, "opcua_plc"));
  assert.equal(cfg.opcua.pki_dir, path.join(dir, "pki"));
  assert.ok(!JSON.stringify(cfg).includes('"pw"'), "the loaded config holds the path, not the password");
  assert.match(
    formatConfigSummary(cfg),
    /opcua: +opc\.tcp:\/\/0\.0\.0\.0:4840, Basic256Sha256 SignAndEncrypt, users "plc"/,
  );

  assert.match(problemsOf(file), /opcua\.users\[0\]\.password_file: uses \$\{CREDENTIALS_DIRECTORY\} but/);
  await writeFile(path.join(dir, "opcua_plc"), "\n");
  assert.match(problemsOf(file, { CREDENTIALS_DIRECTORY: dir }), /opcua_plc is empty/);
});

test("opcua: policy and mode lists must pair up, and someone must be able to log in", async () => {
  const { file } = await configFile("{enabled: true, security: {policies: [None], modes: [SignAndEncrypt]}}");
  const message = problemsOf(file);
  assert.match(message, /opcua\.security\.policies: lists "None" but opcua\.security\.modes does not/);
  assert.match(
    message,
    /opcua\.security\.modes: lists a signing mode but opcua\.security\.policies has only "None"/,
  );
  assert.match(
    message,
    /opcua\.users: is empty and opcua\.allow_anonymous is false, so no client could log in/,
  );

  const plainUsers = await configFile(
    "{users: [{username: plc, password_file: /etc/hostname}], security: {policies: [None], modes: [None]}}",
  );
  assert.match(
    problemsOf(plainUsers.file),
    /opcua\.security\.policies: has only "None", so users cannot log in/,
  );

  const anonymous = await configFile(
    "{enabled: true, allow_anonymous: true, security: {policies: [None], modes: [None]}}",
  );
  assert.equal(loadConfig(anonymous.file, {}).opcua.allow_anonymous, true);
  // Disabled, the server's keys are not checked for a login.
  const off = await configFile("{enabled: false}");
  assert.equal(loadConfig(off.file, {}).opcua.enabled, false);
  const bad = await configFile("{port: 0, result_queue: 0, security: {modes: [Encrypt]}}");
  const badMessage = problemsOf(bad.file);
  assert.match(badMessage, /opcua\.port/);
  assert.match(badMessage, /opcua\.result_queue/);
  assert.match(badMessage, /opcua\.security\.modes\[0\]/);
});
