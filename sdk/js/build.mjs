// Builds a JavaScript Eddy function into a component. Run by `eddy build` (which writes this
// file, the SDK, the entry module and the WIT into a scratch folder beside a copy of the
// project's modules):
//   node build.mjs PROJECT_DIR ENTRY_JS WIT_DIR OUT_WASM
//
// Two steps. esbuild bundles the entry and everything it imports or requires into one ES
// module, so CommonJS (`require`, `module.exports`) and npm packages from the project's
// node_modules work; `eddy` and `eddy-events` resolve to the SDK written beside the entry.
// componentize-js then turns the bundle into a component of the `eddy:function` world.
// Each tool is found in the project's node_modules, else in $EDDY_JS_TOOLS. Without esbuild,
// the entry goes to componentize-js as it is (ES modules with relative imports only).
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const [project, entry, wit, out] = process.argv.slice(2);
const COMPONENTIZE = "@bytecodealliance/componentize-js";
const places = [project, process.env.EDDY_JS_TOOLS].filter(Boolean);

// Both packages export only an `import` condition or a `main`, so resolve them by hand from
// their package.json rather than with require.resolve.
async function locate(name) {
  for (const place of places) {
    const root = join(place, "node_modules", name);
    try {
      const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8"));
      const exported = manifest.exports?.import ?? manifest.exports?.["."]?.import;
      const file = typeof exported === "string" ? exported : manifest.main;
      return join(root, file ?? "index.js");
    } catch {
      // not installed there
    }
  }
  return undefined;
}

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}

async function bundle(esbuildPath) {
  const loaded = await import(pathToFileURL(esbuildPath).href);
  const esbuild = loaded.build ? loaded : loaded.default;
  const scratch = dirname(entry);
  const sdk = {
    eddy: join(scratch, "eddy.js"),
    "eddy-events": join(scratch, "eddy-events.js"),
  };
  const output = join(scratch, "__eddy_bundle.js");
  try {
    await esbuild.build({
      absWorkingDir: scratch,
      entryPoints: [entry],
      outfile: output,
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: "es2022",
      mainFields: ["module", "main"],
      conditions: ["import", "require", "default"],
      nodePaths: [join(project, "node_modules")],
      external: ["eddy:*", "wasi:*"],
      logLevel: "silent",
      plugins: [
        {
          name: "eddy-sdk",
          setup(build) {
            build.onResolve({ filter: /^(eddy|eddy-events)$/ }, (args) => ({ path: sdk[args.path] }));
          },
        },
      ],
    });
  } catch (error) {
    const problems = (error.errors ?? [])
      .map((e) => {
        const at = e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ` : "";
        const hint = /Could not resolve "(node:)?[a-z_]+"/.test(e.text)
          ? " (Node.js built-in modules do not exist in the sandbox; npm packages must be installed in the project's node_modules)"
          : "";
        return `  ${at}${e.text}${hint}`;
      })
      .join("\n");
    fail(`bundling failed:\n${problems || error.message}`);
  }
  return output;
}

const componentizePath = await locate(COMPONENTIZE);
if (!componentizePath) {
  fail(`${COMPONENTIZE} is not installed in ${places.join(" or ")}: run \`npm install --save-dev ${COMPONENTIZE}\``);
}
const esbuildPath = await locate("esbuild");
let source = entry;
if (esbuildPath) {
  source = await bundle(esbuildPath);
} else {
  console.error(
    `note: esbuild is not installed in ${places.join(" or ")}: building without bundling, so CommonJS and npm packages are not available (npm install --save-dev esbuild)`,
  );
}

const { componentize } = await import(pathToFileURL(componentizePath).href);
let component;
try {
  ({ component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName: "eddy:function/function@0.1.2",
    // `fetch` goes out through wasi:http/outgoing-handler; a function exports no HTTP handler.
    disableFeatures: ["fetch-event"],
  }));
} catch (error) {
  fail(`componentize-js failed: ${error && error.message ? error.message : error}`);
}
await writeFile(out, component);
console.error(`built ${out} (${Math.round(component.length / 1024)} KiB)`);
