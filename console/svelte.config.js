// Svelte compiler options: CSS goes to files (never injected at run time), so the console
// runs under `style-src 'self'`.
export default {
  compilerOptions: { css: 'external' },
};
