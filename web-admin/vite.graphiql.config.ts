import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';

// GraphiQL, the second entry: built into dist-graphiql/. The server answers a browser's
// GET /graphql with its index.html and serves the rest under /graphiql/ (off in production).
export default defineConfig({
  root: fileURLToPath(new URL('./graphiql', import.meta.url)),
  base: '/graphiql/',
  plugins: [react()],
  worker: { format: 'es' },
  build: {
    outDir: fileURLToPath(new URL('./dist-graphiql', import.meta.url)),
    emptyOutDir: true,
    sourcemap: false,
    // Monaco (GraphiQL's editor) is a few MB on its own: sizes are in web-admin/README.md.
    chunkSizeWarningLimit: 6000,
    rollupOptions: {
      onwarn(warning, warn) {
        // @graphiql/react marks modules "use no memo" for the React compiler: meaningless here.
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE' && warning.message.includes('use no memo')) return;
        warn(warning);
      },
    },
  },
});
