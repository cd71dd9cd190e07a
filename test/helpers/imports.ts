import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface ImportEdge {
  /** Importing file, relative to the repository root (`src/capture/camera.ts`). */
  from: string;
  /** Imported file, relative to the repository root. */
  to: string;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(repoRoot, dir), { withFileTypes: true }).flatMap((entry) => {
    const rel = `${dir}/${entry.name}`;
    if (entry.isDirectory()) return sourceFiles(rel);
    return /\.c?ts$/.test(entry.name) && !entry.name.endsWith(".d.ts") ? [rel] : [];
  });
}

/** Every relative import and re-export of `src/`, static or dynamic, resolved to the file it names. */
export function importEdges(): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const specifier = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)["'](\.{1,2}\/[^"']+)["']/gm;
  for (const file of sourceFiles("src")) {
    const text = readFileSync(path.join(repoRoot, file), "utf8");
    for (const match of text.matchAll(specifier)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), match[1]!));
      edges.push({ from: file, to: target.replace(/\.c?js$/, (ext) => (ext === ".cjs" ? ".cts" : ".ts")) });
    }
  }
  return edges;
}
