/** Reading the file and parsing YAML (or JSON, which is YAML) with line numbers for every key. */
import fs from "node:fs";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from "yaml";
import { StpmdError } from "../core/errors.js";
import { describeFsError } from "./files.js";
import type { KeyPath, Problem } from "./problems.js";

export interface ParsedFile {
  data: unknown;
  /** 1-based line of the key (or list item) at a path, or of its nearest ancestor in the file. */
  lineOf: (keyPath: KeyPath) => number | undefined;
}

export function parseConfigText(text: string, problems: Problem[]): ParsedFile | undefined {
  const lineCounter = new LineCounter();
  // merge: lets cameras share settings with `<<: *common`.
  const doc = parseDocument(text.replace(/^\uFEFF/, ""), { lineCounter, prettyErrors: false, merge: true });
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      problems.push({
        path: [],
        message: `YAML syntax error at line ${line}, column ${col}: ${error.message}`,
      });
    }
    return undefined;
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    problems.push({ path: [], message: `YAML error: ${(err as Error).message}` });
    return undefined;
  }
  const lineOf = (keyPath: KeyPath): number | undefined => {
    let node: unknown = doc.contents;
    let offset: number | undefined;
    for (const key of keyPath) {
      if (isMap(node)) {
        const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(key));
        if (pair === undefined) break;
        offset = (pair.key as YamlNode).range?.[0];
        node = pair.value;
      } else if (isSeq(node) && typeof key === "number") {
        const item = node.items[key] as YamlNode | undefined;
        if (item === undefined) break;
        offset = item.range?.[0];
        node = item;
      } else {
        break;
      }
    }
    return offset === undefined ? undefined : lineCounter.linePos(offset).line;
  };
  return { data: data ?? {}, lineOf };
}

// ---------------------------------------------------------------------------------------------------------------
// loadConfig

export function readConfigFile(file: string): string {
  try {
    if (fs.statSync(file).isDirectory()) {
      throw new StpmdError("ERR_CONFIG_INVALID", `cannot read config file ${file}: it is a directory`);
    }
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if (err instanceof StpmdError) throw err;
    throw new StpmdError("ERR_CONFIG_INVALID", `cannot read config file ${file}: ${describeFsError(err)}`, {
      cause: err,
    });
  }
}
