// Bundles the web phone (src/phone.js + JsSIP from npm) into src/rtc2sip/web/static/phone.js, the file
// the gateway serves at /phone.js. The output is committed: an installed rtc2sip needs no network and
// no node. Every bundled npm package's licence is copied into the header of the output.
//
//   node build.mjs            write the bundle
//   node build.mjs --check    exit 1 when the committed bundle differs from a fresh build
import { build } from 'esbuild';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outfile = join(here, '..', 'src', 'rtc2sip', 'web', 'static', 'phone.js');
const check = process.argv.includes('--check');

const result = await build({
  entryPoints: [join(here, 'src', 'phone.js')],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: true,
  legalComments: 'none', // replaced by the full licence texts below
  metafile: true,
  write: false,
  logLevel: 'warning',
});

// The npm packages the bundle really contains, with their licence files.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (!m || packages.has(m[1])) continue;
  const dir = join(here, 'node_modules', m[1]);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const licenceFile = ['LICENSE', 'LICENSE.md', 'license.md', 'LICENSE.txt', 'license']
    .map((f) => join(dir, f)).find((f) => existsSync(f));
  const text = licenceFile ? readFileSync(licenceFile, 'utf8').trim() : `License: ${pkg.license}`;
  packages.set(m[1], { version: pkg.version, license: pkg.license, text });
}
const names = [...packages.keys()].sort();
const header = [
  '/*! rtc2sip web phone: built by webphone/build.mjs from webphone/src/phone.js; do not edit, rebuild.',
  ' *',
  ` * Bundled npm packages: ${names.map((n) => `${n} ${packages.get(n).version} (${packages.get(n).license})`).join(', ')}.`,
  ...names.flatMap((n) => [' *', ` * ---- ${n} ${packages.get(n).version} ----`,
    ...packages.get(n).text.replace(/\*\//g, '* /').split('\n').map((l) => (` * ${l}`).trimEnd())]),
  ' */',
  '',
].join('\n');
const output = header + result.outputFiles[0].text;

if (check) {
  const committed = existsSync(outfile) ? readFileSync(outfile, 'utf8') : '';
  if (committed !== output) {
    console.error(`${relative(process.cwd(), outfile)} is stale: run webphone/build.sh and commit it`);
    process.exit(1);
  }
  console.error(`${relative(process.cwd(), outfile)} is up to date`);
} else {
  writeFileSync(outfile, output);
  console.error(`wrote ${relative(process.cwd(), outfile)} (${output.length} bytes; ${names.join(', ')})`);
}
