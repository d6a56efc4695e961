import { defineConfig } from 'vitest/config';

// Two projects: fast pure tests, and end-to-end tests that build network namespaces,
// load rules with the real iptables-restore and send real packets (root only).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/e2e/**'],
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          // Each file builds its own namespaces; two at a time suits a 2-core machine.
          maxWorkers: 2,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
