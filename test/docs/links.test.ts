import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

/**
 * The docs are a set of pages that link into each other: every relative link must name a file that exists and every
 * `#anchor` a heading of that page, as GitHub renders it. External links are not fetched (the tests run offline).
 */
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The pages checked: the front door, the history, the benchmarks' notes and everything under docs/. */
function pages(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(path.join(repoRoot, dir), { withFileTypes: true }).flatMap((entry) => {
      const rel = `${dir}/${entry.name}`;
      if (entry.isDirectory()) return walk(rel);
      return entry.name.endsWith(".md") ? [rel] : [];
    });
  return ["README.md", "CHANGELOG.md", "benchmarks/README.md", ...walk("docs")];
}

/** The text outside fenced code blocks and inline code spans, where links and headings are markdown. */
export function proseLines(markdown: string): string[] {
  const out: string[] = [];
  let fence: string | undefined;
  for (const line of markdown.split("\n")) {
    const marker = /^\s*(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence !== undefined) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length) fence = undefined;
      out.push("");
      continue;
    }
    if (marker) {
      fence = marker;
      out.push("");
      continue;
    }
    out.push(line.replace(/(`+)[^`]*?\1/g, ""));
  }
  return out;
}

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2, … */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // a link in a heading keeps its text
    .replace(/<[^>]+>/g, "")
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "").replace(/ /g, "-");
}

/** Every anchor a page offers: its headings' slugs (numbered when repeated) and explicit `id`/`name` anchors. */
export function anchors(markdown: string): Set<string> {
  const found = new Set<string>();
  const seen = new Map<string, number>();
  let fence = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fence = !fence;
    if (fence) continue;
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const base = slug(heading[1]!.replace(/`/g, ""));
      const count = seen.get(base) ?? 0;
      seen.set(base, count + 1);
      found.add(count === 0 ? base : `${base}-${count}`);
    }
    for (const match of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) found.add(match[1]!);
  }
  return found;
}

/** Every inline link and image target of a page, with its line number. */
export function links(markdown: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  proseLines(markdown).forEach((text, index) => {
    for (const match of text.matchAll(/!?\[(?:[^\]]|\][^(])*?\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      out.push({ line: index + 1, target: match[1]! });
    }
  });
  return out;
}

/** The broken links of one page, each as `file:line: target: why`. */
export function brokenLinks(file: string, read: (file: string) => string = readRepoFile): string[] {
  const problems: string[] = [];
  for (const { line, target } of links(read(file))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http(s), mailto: not fetched offline
    const [filePart, anchor] = target.split("#", 2) as [string, string | undefined];
    const resolved =
      filePart === "" ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), filePart));
    const where = `${file}:${line}: ${target}`;
    if (resolved.startsWith("../")) {
      problems.push(`${where}: points outside the repository`);
      continue;
    }
    if (filePart !== "" && !exists(resolved)) {
      problems.push(`${where}: ${resolved} does not exist`);
      continue;
    }
    if (anchor === undefined) continue;
    if (!resolved.endsWith(".md")) problems.push(`${where}: an anchor into a file that is not markdown`);
    else if (!anchors(read(resolved)).has(anchor))
      problems.push(`${where}: ${resolved} has no heading #${anchor}`);
  }
  return problems;
}

function readRepoFile(file: string): string {
  return readFileSync(path.join(repoRoot, file), "utf8");
}

function exists(file: string): boolean {
  const full = path.join(repoRoot, file);
  return existsSync(full) && (statSync(full).isFile() || statSync(full).isDirectory());
}

test("every relative link of the README, the CHANGELOG and docs/ resolves, and every #anchor to a heading", () => {
  const checked = pages();
  assert.ok(checked.length >= 15, `found only ${checked.length} pages`);
  const total = checked.reduce((sum, file) => sum + links(readRepoFile(file)).length, 0);
  assert.ok(total >= 100, `found only ${total} links: the link pattern is broken`);
  const problems = checked.flatMap((file) => brokenLinks(file));
  assert.deepEqual(problems, [], `broken links:\n${problems.join("\n")}`);
});

test("GitHub's heading slugs", () => {
  assert.equal(slug("Set up, run, test"), "set-up-run-test");
  assert.equal(slug("stpmd doctor [--config FILE]"), "stpmd-doctor---config-file");
  assert.equal(slug("Sparkplug B: topics & metrics (v3.0)"), "sparkplug-b-topics--metrics-v30");
  assert.equal(slug("Targets (issue #4) at a glance"), "targets-issue-4-at-a-glance");
  assert.equal(
    slug("What geometry buys (VisA fryum, 1500×1000, small defects)"),
    "what-geometry-buys-visa-fryum-15001000-small-defects",
  );
  assert.deepEqual(
    [...anchors("# A\n## A\n```\n# not a heading\n```\n### `cli` command\n")],
    ["a", "a-1", "cli-command"],
  );
});

test("a missing file, a missing anchor and a link outside the repository are each reported; code is not a link", () => {
  const page = [
    "# Title",
    "[ok](#title) [web](https://example.com/x) [self](README.md) [img](../README.md)",
    "[gone](no-such-page.md) [bad anchor](#nothing-here) [outside](../../etc/passwd)",
    "`[in code](missing.md)`",
    "```",
    "[in a fence](missing.md)",
    "```",
  ].join("\n");
  const read = (file: string) => (file === "docs/page.md" ? page : readRepoFile(file));
  const problems = brokenLinks("docs/page.md", read);
  assert.deepEqual(
    problems.map((problem) => problem.replace(/:.*?: /, ": ")),
    [
      "docs/page.md: no-such-page.md: docs/no-such-page.md does not exist",
      "docs/page.md: #nothing-here: docs/page.md has no heading #nothing-here",
      "docs/page.md: ../../etc/passwd: points outside the repository",
    ],
  );
});
