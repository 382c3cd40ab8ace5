// Compiles and instantiates the Worker's wasm in V8 (Debian's Chromium: a V8 as new as
// workerd's, which Node 20's is not) and prints {bytes, compile_ms, instantiate_ms}
// as JSON: medians of seven runs. Imports are stubs: instantiation runs no Rust code
// (there is no start function), so it measures what the engine does with the module.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const bytes = readFileSync(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const timing = await page.evaluate(async (b64) => {
    const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const compile = [];
    const instantiate = [];
    for (let i = 0; i < 7; i++) {
      let t = performance.now();
      const module = await WebAssembly.compile(bin);
      compile.push(performance.now() - t);
      const imports = {};
      for (const imp of WebAssembly.Module.imports(module)) {
        imports[imp.module] ??= {};
        if (imp.kind === 'function') imports[imp.module][imp.name] = () => { throw new Error('stub'); };
        else if (imp.kind === 'memory') imports[imp.module][imp.name] = new WebAssembly.Memory({ initial: 17 });
        else if (imp.kind === 'table') imports[imp.module][imp.name] = new WebAssembly.Table({ initial: 0, element: 'anyfunc' });
        else if (imp.kind === 'global') imports[imp.module][imp.name] = new WebAssembly.Global({ value: 'i32', mutable: true }, 0);
        else if (imp.kind === 'tag') imports[imp.module][imp.name] = WebAssembly.JSTag;
      }
      t = performance.now();
      await WebAssembly.instantiate(module, imports);
      instantiate.push(performance.now() - t);
    }
    return { compile_ms: median(compile), instantiate_ms: median(instantiate) };
  }, bytes.toString('base64'));
  console.log(JSON.stringify({ bytes: bytes.length, ...timing }));
} finally {
  await browser.close();
}
