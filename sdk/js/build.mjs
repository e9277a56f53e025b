// Builds a JavaScript Eddy function into a component with componentize-js. Run by
// `eddy deploy --build` (which writes this file, the SDK and the WIT into a build folder):
//   node build.mjs PROJECT_DIR ENTRY_JS WIT_DIR OUT_WASM
// componentize-js is found in the project's node_modules, else in $EDDY_JS_TOOLS.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [project, entry, wit, out] = process.argv.slice(2);
const PACKAGE = "@bytecodealliance/componentize-js";

// The package only exports an `import` condition, so resolve it by hand from its package.json
// rather than with require.resolve.
async function locate() {
  const places = [project, process.env.EDDY_JS_TOOLS].filter(Boolean);
  for (const place of places) {
    const root = join(place, "node_modules", PACKAGE);
    try {
      const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8"));
      const exported = manifest.exports?.import ?? manifest.exports?.["."]?.import;
      return join(root, exported ?? manifest.main);
    } catch {
      // not installed there
    }
  }
  throw new Error(
    `${PACKAGE} is not installed in ${places.join(" or ")}: run \`npm install --save-dev ${PACKAGE}\``,
  );
}

const { componentize } = await import(pathToFileURL(await locate()).href);
const { component } = await componentize({
  sourcePath: entry,
  witPath: wit,
  worldName: "eddy:function/function@0.1.2",
  // `fetch` goes out through wasi:http/outgoing-handler; a function exports no HTTP handler.
  disableFeatures: ["fetch-event"],
});
await writeFile(out, component);
console.error(`built ${out} (${Math.round(component.length / 1024)} KiB)`);
