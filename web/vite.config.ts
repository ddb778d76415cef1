/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// A running node for `npm run dev` (override with VECHE_URL).
const node = process.env.VECHE_URL ?? 'http://127.0.0.1:8780';

export default defineConfig({
  // JSX for Preact through Vite's built-in (Oxc) transform: no framework plugin.
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    target: 'es2020',
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
    // No preload polyfill (it would be dead code).
    modulePreload: { polyfill: false },
    // Two pages: the client, and the object-discussion widget with a small bundle of its own.
    rollupOptions: {
      input: { index: 'index.html', embed: 'embed.html' },
    },
    reportCompressedSize: true,
  },
  server: {
    proxy: {
      '/api': {
        target: node,
        ws: true,
        changeOrigin: true,
        // The node refuses a foreign Origin (on requests and on the WebSocket
        // upgrade); the dev server's own is foreign to it, so present the node's.
        configure(proxy) {
          proxy.on('proxyReq', (proxyReq) => {
            if (proxyReq.getHeader('origin')) proxyReq.setHeader('origin', node);
          });
          proxy.on('proxyReqWs', (proxyReq) => proxyReq.setHeader('origin', node));
        },
      },
    },
  },
  test: {
    environment: 'happy-dom',
    include: ['test/**/*.test.{ts,tsx}'],
  },
});
