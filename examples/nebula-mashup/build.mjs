// Bundles src/main.js into dist/ with esbuild and copies index.html next to it: dist/ is what the
// gateway serves (`mashup.dir`). QLIK_MOUNT (default /mashup, the gateway's qlik.mount) and
// QLIK_APP (default qlik-sim's Sales app) are read at build time. ESBUILD_NODE_PATHS (optional,
// ':'-separated) names other node_modules directories to resolve packages from.
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.env.OUT_DIR || path.join(here, 'dist');
const mount = process.env.QLIK_MOUNT ?? '/mashup';
const app = process.env.QLIK_APP || '5a1e5000-5a1e-4000-8000-000000000001';

await mkdir(out, { recursive: true });
await build({
  entryPoints: [path.join(here, 'src/main.js')],
  bundle: true,
  format: 'esm',
  minify: true,
  outfile: path.join(out, 'main.js'),
  nodePaths: (process.env.ESBUILD_NODE_PATHS || '').split(':').filter(Boolean),
  define: {
    'process.env.NODE_ENV': '"production"',
    'process.env.QLIK_MOUNT': JSON.stringify(mount),
    'process.env.QLIK_APP': JSON.stringify(app),
  },
  logLevel: 'warning',
});
await copyFile(path.join(here, 'index.html'), path.join(out, 'index.html'));
console.log(`built ${out} (mount ${mount}, app ${app})`);
