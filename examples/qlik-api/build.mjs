// Bundles the example with esbuild into OUTDIR (default dist/): `node build.mjs [OUTDIR] [--sim]`.
// --sim adds sim-runtime.js, for qlik-sim's stand-in main.js (see there); leave it out for Qlik.
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// @qlik/api 2.19.0's runtime modules: the files its Node.js entry points load.
const CHUNKS = {
  auth: 'auth-B-dVJJjy.js',
  qix: 'qix-g-cGB4fY.js',
  'invoke-fetch': 'invoke-fetch-D1eDS94Z.js',
};

/** `build` is esbuild's (passed in so that another package's esbuild can build this). */
export async function buildExample({ build, outdir, sim, nodeModules = path.join(here, 'node_modules') }) {
  nodeModules = path.resolve(nodeModules);
  mkdirSync(outdir, { recursive: true });
  const chunks = {
    name: 'qlik-api-chunks',
    setup(b) {
      b.onResolve({ filter: /^qlik-api-chunk:/ }, (args) => {
        const file = path.join(nodeModules, '@qlik/api/chunks', CHUNKS[args.path.slice('qlik-api-chunk:'.length)] || '?');
        if (!existsSync(file)) {
          return { errors: [{ text: `${file} is missing: sim-runtime.js is written for @qlik/api 2.19.0` }] };
        }
        return { path: file };
      });
    },
  };
  await build({
    stdin: {
      contents: sim ? 'import "./sim-runtime.js";\nimport "./main.js";\n' : 'import "./main.js";\n',
      resolveDir: here,
      sourcefile: 'entry.js',
    },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    external: ['ws'],
    nodePaths: [nodeModules],
    plugins: [chunks],
    outfile: path.join(outdir, 'main.js'),
    logLevel: 'warning',
  });
  cpSync(path.join(here, 'index.html'), path.join(outdir, 'index.html'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const outdir = args.find((a) => !a.startsWith('--')) || path.join(here, 'dist');
  const { build } = await import('esbuild');
  await buildExample({ build, outdir, sim: args.includes('--sim') });
}
