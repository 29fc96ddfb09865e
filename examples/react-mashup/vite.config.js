import { defineConfig, loadEnv } from 'vite';
import react from '@vitejs/plugin-react';

// Everything (page, scripts, Qlik's engine websocket under /mashup) is on one origin, so the built
// page can forbid every other: 'self' covers ws:/wss: to the same host in current browsers.
const CSP = [
  "default-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'self'",
].join('; ');

/** Adds the Content-Security-Policy to the built index.html (the dev server needs inline scripts). */
function contentSecurityPolicy() {
  return {
    name: 'content-security-policy',
    apply: 'build',
    transformIndexHtml: () => [
      { tag: 'meta', attrs: { 'http-equiv': 'Content-Security-Policy', content: CSP }, injectTo: 'head-prepend' },
    ],
  };
}

// The mashup is served by qlik-gateway at the root of its origin: `mashup.dir = "…/dist"` for the
// build, `mashup.upstream = "http://127.0.0.1:5173"` for this dev server.
export default defineConfig(({ mode }) => {
  // Settings for the dev server itself (not exposed to the page): PORT, HOST, HMR_CLIENT_PORT.
  const env = loadEnv(mode, process.cwd(), '');
  const host = env.HOST || '127.0.0.1';
  const port = Number(env.PORT || 5173);
  const hmrClientPort = env.HMR_CLIENT_PORT ? Number(env.HMR_CLIENT_PORT) : undefined;

  return {
    base: '/',
    // VITE_CACHE_DIR: where Vite keeps its dependency cache (default node_modules/.vite).
    ...(env.VITE_CACHE_DIR ? { cacheDir: env.VITE_CACHE_DIR } : {}),
    plugins: [react(), contentSecurityPolicy()],
    server: {
      // 127.0.0.1, not "localhost" (which may resolve to ::1 only): the gateway's upstream URL names it.
      host,
      port,
      strictPort: true,
      // Behind the gateway the browser loads the page from the gateway's origin, and the gateway
      // proxies Vite's HMR websocket too. With no port set, Vite's client connects to the page's
      // own host and port, i.e. the gateway: nothing to configure. HMR_CLIENT_PORT pins the port
      // the browser uses when something in front of the gateway changes it.
      // (`server.ws` is Vite 8's name for the websocket options formerly under `server.hmr`.)
      ...(hmrClientPort ? { ws: { clientPort: hmrClientPort } } : {}),
    },
    preview: {
      host,
      port: Number(env.PREVIEW_PORT || 4173),
      strictPort: true,
    },
    build: {
      outDir: 'dist',
      sourcemap: true,
    },
  };
});
