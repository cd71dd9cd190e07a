/**
 * The console's build: `web/console/` → `dist/console/` (served by src/publish/http/console.ts). Vite's own esbuild
 * compiles the JSX for Preact; no plugin, no Babel. Hashed names under `assets/` let the server cache them for good.
 */
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  root: here("."),
  base: "/",
  publicDir: false,
  logLevel: "warn",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: here("../../dist/console"),
    emptyOutDir: true,
    target: "es2022",
    // one script and one style: the page is small, and a CSP of 'self' needs no inline module-preload helper
    modulePreload: false,
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
  },
});
