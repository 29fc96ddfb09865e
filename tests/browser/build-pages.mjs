// Builds the mashup directory the client-library browser tests serve from the gateway:
//   index.html            a landing page (the gateway's [mashup] dir needs one)
//   qlik-api/             examples/qlik-api built for qlik-sim (its build.mjs --sim; @qlik/api from here)
//   embed/                @qlik/embed-web-components' loader, as shipped on npm, and a page using it
//   iframe/               a mashup page with a Single Integration iframe and framed gateway pages
// Usage: node tests/browser/build-pages.mjs OUTDIR
import { build } from 'esbuild';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildExample } from '../../examples/qlik-api/build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const out = process.argv[2];
if (!out) throw new Error('usage: build-pages.mjs OUTDIR');

await buildExample({ build, outdir: path.join(out, 'qlik-api'), sim: true, nodeModules: path.join(here, 'node_modules') });

mkdirSync(path.join(out, 'embed'), { recursive: true });
cpSync(path.join(here, 'node_modules/@qlik/embed-web-components/dist/index.js'), path.join(out, 'embed/qlik-embed.js'));
cpSync(path.join(here, 'pages/embed.html'), path.join(out, 'embed/index.html'));

mkdirSync(path.join(out, 'iframe'), { recursive: true });
cpSync(path.join(here, 'pages/iframe.html'), path.join(out, 'iframe/index.html'));

writeFileSync(path.join(out, 'index.html'), '<!doctype html><title>client libraries</title><p>qlik-gateway browser tests</p>\n');
