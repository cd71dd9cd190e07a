/** Paths in the file (made absolute) and secret files (read, checked). */
import fs from "node:fs";
import path from "node:path";
import { errorMessage } from "../core/errors.js";
import type { ConfigEnv } from "./env.js";
import { isObject, type KeyPath, type Problem } from "./problems.js";

/** `${NAME}` → env NAME, for credential paths such as `${CREDENTIALS_DIRECTORY}/mqtt_password`. */
export function expandEnvVars(
  text: string,
  keyPath: KeyPath,
  env: ConfigEnv,
  problems: Problem[],
): string | undefined {
  let ok = true;
  const expanded = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined || value === "") {
      ok = false;
      const hint =
        name === "CREDENTIALS_DIRECTORY" ? " (systemd sets it for units with LoadCredential=)" : "";
      problems.push({
        path: keyPath,
        message: `uses \${${name}} but that environment variable is not set${hint}`,
      });
      return "";
    }
    return value;
  });
  return ok ? expanded : undefined;
}

/** Makes `holder[key]` (a path string) absolute against `baseDir`, expanding `${NAME}` first where allowed. */
export function resolvePathField(
  holder: unknown,
  key: string,
  keyPath: KeyPath,
  baseDir: string,
  env: ConfigEnv,
  problems: Problem[],
  options: { expandEnv: boolean } = { expandEnv: false },
): void {
  if (!isObject(holder) || typeof holder[key] !== "string") return;
  const raw = holder[key] as string;
  const expanded = options.expandEnv ? expandEnvVars(raw, keyPath, env, problems) : raw;
  if (expanded !== undefined) holder[key] = path.resolve(baseDir, expanded);
}

export function resolveRelativePaths(
  cfg: unknown,
  baseDir: string,
  env: ConfigEnv,
  problems: Problem[],
): void {
  if (!isObject(cfg)) return;
  resolvePathField(cfg.model, "bundle", ["model", "bundle"], baseDir, env, problems);
  resolvePathField(cfg.collection, "dir", ["collection", "dir"], baseDir, env, problems);
  resolvePathField(cfg.records, "dir", ["records", "dir"], baseDir, env, problems);
  resolvePathField(cfg.records, "labelled_dir", ["records", "labelled_dir"], baseDir, env, problems);
  resolvePathField(cfg.candidates, "dir", ["candidates", "dir"], baseDir, env, problems);
  resolvePathField(cfg.audit, "file", ["audit", "file"], baseDir, env, problems);
  if (Array.isArray(cfg.cameras)) {
    cfg.cameras.forEach((camera: unknown, i) => {
      if (!isObject(camera)) return;
      resolvePathField(camera, "model", ["cameras", i, "model"], baseDir, env, problems);
      resolvePathField(camera.ignore, "mask", ["cameras", i, "ignore", "mask"], baseDir, env, problems);
    });
  }
  const sparkplug = cfg.sparkplug;
  if (isObject(sparkplug)) {
    resolvePathField(sparkplug, "bdseq_file", ["sparkplug", "bdseq_file"], baseDir, env, problems);
    resolvePathField(sparkplug.history, "dir", ["sparkplug", "history", "dir"], baseDir, env, problems);
    resolvePathField(sparkplug, "password_file", ["sparkplug", "password_file"], baseDir, env, problems, {
      expandEnv: true,
    });
  }
  const secretOptions = { expandEnv: true };
  const opcua = cfg.opcua;
  if (isObject(opcua)) resolvePathField(opcua, "pki_dir", ["opcua", "pki_dir"], baseDir, env, problems);
  for (const keyPath of PASSWORD_USER_LISTS) {
    const users = listAt(cfg, keyPath);
    users?.forEach((user, i) => {
      resolvePathField(
        user,
        "password_file",
        [...keyPath, i, "password_file"],
        baseDir,
        env,
        problems,
        secretOptions,
      );
    });
  }
  const mqtt = cfg.mqtt;
  if (!isObject(mqtt)) return;
  resolvePathField(mqtt.outbox, "dir", ["mqtt", "outbox", "dir"], baseDir, env, problems);
  resolvePathField(mqtt, "password_file", ["mqtt", "password_file"], baseDir, env, problems, secretOptions);
  for (const key of ["ca", "cert", "key"]) {
    resolvePathField(mqtt.tls, key, ["mqtt", "tls", key], baseDir, env, problems, secretOptions);
  }
}

export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const reasons: Record<string, string> = {
    ENOENT: "no such file",
    EACCES: "permission denied",
    EISDIR: "is a directory",
    ENOTDIR: "a parent is not a directory",
  };
  return code !== undefined && reasons[code] !== undefined
    ? `${reasons[code]} (${code})`
    : (err as Error).message;
}

export function readableFileProblem(file: string, keyPath: KeyPath): Problem | undefined {
  try {
    if (fs.statSync(file).isDirectory())
      return { path: keyPath, message: `${file} is a directory, not a file` };
    fs.accessSync(file, fs.constants.R_OK);
    return undefined;
  } catch (err) {
    return { path: keyPath, message: `cannot read ${file}: ${describeFsError(err)}` };
  }
}

/** A path whose `${NAME}` could not be expanded; that was reported already, so the file is not tried. */
export function isUnexpanded(file: string): boolean {
  return /\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(file);
}

/**
 * Reads a password file: its content without the trailing newlines editors and `echo` add. Throws a one-line
 * Error naming the file when it cannot be read or is empty.
 */
export function readPasswordFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${file}: ${describeFsError(err)}`);
  }
  const password = text.replace(/[\r\n]+$/, "");
  // Editors and `echo` add a trailing newline that is not part of the secret.
  if (password === "") throw new Error(`${file} is empty`);
  return password;
}

/** The lists of users with a password file: OPC UA users and console operators. */
const PASSWORD_USER_LISTS = [
  ["opcua", "users"],
  ["http", "console", "users"],
] as const;

/** The array at `keyPath` of a raw config, if there is one. */
function listAt(cfg: unknown, keyPath: readonly string[]): unknown[] | undefined {
  let value: unknown = cfg;
  for (const key of keyPath) value = isObject(value) ? value[key] : undefined;
  return Array.isArray(value) ? value : undefined;
}

/**
 * Checks the users' password files now, so that `check-config` and the start fail on them; each interface reads
 * them again when it starts (the config keeps only the paths, so no secret sits in the loaded config).
 */
function checkUserPasswordFiles(cfg: unknown, problems: Problem[]): void {
  for (const keyPath of PASSWORD_USER_LISTS) {
    listAt(cfg, keyPath)?.forEach((user, i) => {
      const file = isObject(user) ? user.password_file : undefined;
      if (typeof file !== "string" || isUnexpanded(file)) return;
      try {
        readPasswordFile(file);
      } catch (err) {
        problems.push({ path: [...keyPath, i, "password_file"], message: (err as Error).message });
      }
    });
  }
}

/** Checks the TLS files and replaces password_file by the password it holds (keeping the path for the summary). */
export function loadSecretFiles(cfg: unknown, problems: Problem[]): void {
  const sparkplug = isObject(cfg) ? cfg.sparkplug : undefined;
  if (isObject(sparkplug)) loadPasswordFile(sparkplug, "sparkplug", problems);
  checkUserPasswordFiles(cfg, problems);
  const mqtt = isObject(cfg) ? cfg.mqtt : undefined;
  if (!isObject(mqtt)) return;
  if (isObject(mqtt.tls)) {
    for (const key of ["ca", "cert", "key"]) {
      const file = mqtt.tls[key];
      if (typeof file !== "string" || isUnexpanded(file)) continue;
      const problem = readableFileProblem(file, ["mqtt", "tls", key]);
      if (problem !== undefined) problems.push(problem);
    }
  }
  loadPasswordFile(mqtt, "mqtt", problems);
}

/** Replaces `<section>.password_file` by the password it holds (the path is kept for the summary). */
function loadPasswordFile(holder: Record<string, unknown>, section: string, problems: Problem[]): void {
  const file = holder.password_file;
  if (typeof file !== "string" || isUnexpanded(file) || holder.password !== undefined) return;
  try {
    holder.password = readPasswordFile(file);
  } catch (err) {
    problems.push({ path: [section, "password_file"], message: errorMessage(err) });
  }
}
