/**
 * What this build of stpmd is, for interfaces that report it (OPC UA's Server_ServerStatus_BuildInfo): the product,
 * the version of package.json, and the build date.
 */
import { readFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const PRODUCT_NAME = "stpmd";
export const PRODUCT_URI = "urn:stpmd";
export const MANUFACTURER = "stpmd contributors";

export interface BuildInfo {
  productName: string;
  productUri: string;
  manufacturerName: string;
  /** `version` of the package.json the running code was built from. */
  softwareVersion: string;
  /** The build's date and time as `YYYYMMDDTHHMMSSZ`, which tells two builds of one version apart. */
  buildNumber: string;
  /**
   * When `npm run build` compiled this module: its file's modification time in dist/ (tsc writes every output on
   * every build; the install script builds on the device, and rsync -a or cp -p keep the time). Not the package's
   * mtime: npm pack stamps every file of a tarball 1985-10-26.
   */
  buildDate: Date;
}

/** This module in dist/src/core/; package.json is at the package's root, three folders up. */
const HERE = fileURLToPath(import.meta.url);
const PACKAGE_JSON = fileURLToPath(new URL("../../../package.json", import.meta.url));

/** Read once: neither changes while the process runs. */
let cached: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  if (cached !== undefined) return cached;
  const { version } = JSON.parse(readFileSync(PACKAGE_JSON, "utf8")) as { version: string };
  const buildDate = statSync(HERE).mtime;
  cached = {
    productName: PRODUCT_NAME,
    productUri: PRODUCT_URI,
    manufacturerName: MANUFACTURER,
    softwareVersion: version,
    buildNumber: buildDate
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d+Z$/, "Z"),
    buildDate,
  };
  return cached;
}
