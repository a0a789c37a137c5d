// Validates every Kubernetes manifest of deploy/ against the Kubernetes API
// schemas, with real tools (installed by scripts/install-deploy-tools.sh):
//
//   1. The chart: `helm lint --strict` and `helm template` (Helm 4, the
//      official binary) with the default values and with every
//      deploy/helm/oclip/ci/*-values.yaml; values the chart must refuse
//      (its `fail` checks) must make `helm template` fail.
//   2. Every rendered document and every document of deploy/jobs/*.yaml is
//      validated twice:
//        schema  against the Kubernetes API's OpenAPI JSON schemas, compiled
//                into Ajv validators by the npm package kubernetes-models
//                (Kubernetes' own types) and @kubernetes-models/prometheus-
//                operator (the ServiceMonitor CRD's schema): required fields,
//                types, enums, formats. An apiVersion/kind without a schema
//                is an error, and so is a non-GA version (the package keeps
//                schemas of removed betas such as apps/v1beta1);
//        strict  unknown fields, which the API's schemas allow (they have no
//                additionalProperties: false; the API server drops or rejects
//                them at apply time): each document becomes a TypeScript
//                object literal typed by the same package's generated
//                interface, and `tsc --strict` rejects every property the
//                type does not have (excess property checks), at any depth.
//   3. The Dockerfile is linted by dockerfile-utils (the VS Code Docker
//      language server's validator: instructions, their arguments and flags,
//      ports, ARG/FROM use); every diagnostic, warnings included, fails.
//   4. Deliberately broken files (tests/deploy/invalid/*.yaml and
//      *.Dockerfile, each with a `# expect: TEXT` line) must each be rejected
//      with an error containing TEXT, so the validators are shown to fail when
//      they should.
//
//   node validate_manifests.mjs TOOLS_DIR SOURCE_DIR
// Prints one line per check and "N passed, N failed"; exit code 1 on failure.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [toolsDir, sourceDir] = process.argv.slice(2).map((p) => path.resolve(p));
if (!toolsDir || !sourceDir) {
  console.error("usage: node validate_manifests.mjs TOOLS_DIR SOURCE_DIR");
  process.exit(2);
}
const helm = path.join(toolsDir, "bin", "helm");
if (!fs.existsSync(helm) || !fs.existsSync(path.join(toolsDir, "node_modules"))) {
  console.error(`no deploy tools in ${toolsDir}: run scripts/install-deploy-tools.sh ${toolsDir}`);
  process.exit(1);
}
const require = createRequire(path.join(toolsDir, "package.json"));
const yaml = require("js-yaml");

const chartDir = path.join(sourceDir, "deploy", "helm", "oclip");
const jobsDir = path.join(sourceDir, "deploy", "jobs");
const invalidDir = path.join(sourceDir, "tests", "deploy", "invalid");

let passed = 0;
let failed = 0;
function record(ok, name, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? `\n     ${detail.replace(/\n/g, "\n     ")}` : ""}`);
}

function run(command, args) {
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  return { code: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
}

// --- Sources of documents ----------------------------------------------------

// [{ source, doc }] for every non-empty YAML document of `text`.
function documents(text, source) {
  return yaml
    .loadAll(text)
    .filter((doc) => doc !== null && doc !== undefined)
    .map((doc, i) => ({ source: `${source} #${i + 1}${doc?.kind ? ` ${doc.kind}/${doc.metadata?.name ?? "?"}` : ""}`, doc }));
}

const valuesFiles = [null].concat(
  fs
    .readdirSync(path.join(chartDir, "ci"))
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .map((f) => path.join(chartDir, "ci", f)),
);

const manifests = [];
for (const values of valuesFiles) {
  const label = values ? path.relative(sourceDir, values) : "default values";
  const valuesArgs = values ? ["-f", values] : [];
  const lint = run(helm, ["lint", "--strict", chartDir, ...valuesArgs]);
  record(lint.code === 0, `helm lint --strict (${label})`, lint.code === 0 ? "" : lint.stdout + lint.stderr);
  const rendered = run(helm, ["template", "oclip", chartDir, "--namespace", "ml", ...valuesArgs]);
  record(rendered.code === 0, `helm template (${label})`, rendered.code === 0 ? "" : rendered.stderr);
  if (rendered.code === 0) manifests.push(...documents(rendered.stdout, `chart (${label})`));
}

// Values the chart must refuse, with the message it must give.
const refused = [
  [["--set", "gpu.count=0", "--set-json", 'models=[{"name":"a","model":"ViT-B-32","pretrained":"random","devices":["cuda:0"]}]'], "runs on cuda:0 but gpu.count is 0"],
  [["--set", "tls.enabled=true"], "set tls.secretName, or tls.cert and tls.key"],
  [["--set", "auth.enabled=true"], "set auth.secretName or auth.tokens"],
  [["--set-json", "models=[]"], "at least one model is required"],
  [["--set", "autoscaling.enabled=true", "--set", "autoscaling.targetCPUUtilizationPercentage=null"], "set targetCPUUtilizationPercentage or enable prometheusMetric"],
];
for (const [args, message] of refused) {
  const result = run(helm, ["template", "oclip", chartDir, ...args]);
  record(result.code !== 0 && result.stderr.includes(message), `chart refuses ${args.filter((a) => !a.startsWith("--")).join(" ")}`,
    result.code !== 0 ? (result.stderr.includes(message) ? "" : `wrong error: ${result.stderr}`) : "rendered without error");
}

for (const file of fs.readdirSync(jobsDir).sort()) {
  if (!/\.ya?ml$/.test(file)) continue;
  manifests.push(...documents(fs.readFileSync(path.join(jobsDir, file), "utf8"), `deploy/jobs/${file}`));
}
record(manifests.length > 0, `collected ${manifests.length} manifests`);

// --- Schema validation -------------------------------------------------------

// The module of an apiVersion's models: "v1" -> kubernetes-models/v1,
// "apps/v1" -> kubernetes-models/apps/v1, the Prometheus Operator's group from
// its own package.
function modelModule(apiVersion) {
  if (typeof apiVersion !== "string") return null;
  if (apiVersion.startsWith("monitoring.coreos.com/")) return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

async function modelClass(doc) {
  const module = modelModule(doc?.apiVersion);
  if (!module || typeof doc.kind !== "string") return { error: "apiVersion and kind are required" };
  // kubernetes-models also keeps the schemas of beta versions that Kubernetes
  // has since removed (apps/v1beta1, policy/v1beta1, autoscaling/v2beta2,
  // ...), so a schema alone does not prove the cluster serves the version.
  // The chart needs Kubernetes >= 1.27: only GA versions are accepted.
  if (!/^([a-z0-9.-]+\/)?v[0-9]+$/.test(doc.apiVersion)) {
    return { error: `${doc.apiVersion} is not a GA API version (alpha/beta APIs are removed or off by default)` };
  }
  // The packages are ES modules without a CommonJS entry, so require.resolve
  // cannot find them: their group/version folders hold an index.js.
  const entry = path.join(toolsDir, "node_modules", module, "index.js");
  if (!fs.existsSync(entry)) {
    return { error: `no schema for apiVersion ${doc.apiVersion} (unknown or removed API group/version)` };
  }
  const exports = await import(pathToFileURL(entry).href);
  const cls = exports[doc.kind];
  if (typeof cls !== "function" || cls.apiVersion !== doc.apiVersion || cls.kind !== doc.kind) {
    return { error: `no schema for kind ${doc.kind} in ${doc.apiVersion}` };
  }
  return { cls, module };
}

async function schemaErrors(doc) {
  const { cls, error } = await modelClass(doc);
  if (error) return error;
  try {
    new cls(doc).validate();
    return "";
  } catch (e) {
    return String(e.message ?? e);
  }
}

// --- Strict validation (unknown fields) ----------------------------------------

// Type-checks every document at once; returns one error string per document
// ("" when clean).
async function strictErrors(docs) {
  const scratch = fs.mkdtempSync(path.join(toolsDir, "strict-"));
  try {
    const lines = [];
    const owner = []; // line number (1-based) -> document index
    const push = (text, index) => {
      for (const line of text.split("\n")) {
        lines.push(line);
        owner.push(index);
      }
    };
    const errors = docs.map(() => "");
    for (let i = 0; i < docs.length; i++) {
      const { cls, module, error } = await modelClass(docs[i]);
      if (error) {
        errors[i] = error;
        continue;
      }
      push(`import type { I${cls.kind} as T${i} } from "${module}/${cls.kind}";`, i);
      push(`export const doc${i}: T${i} = ${JSON.stringify(docs[i], null, 2)};`, i);
    }
    const file = path.join(scratch, "manifests.mts");
    fs.writeFileSync(file, lines.join("\n") + "\n");
    const tsc = run(process.execPath, [
      require.resolve("typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck",
      "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
      file,
    ]);
    const output = tsc.stdout + tsc.stderr;
    // manifests.mts(LINE,COL): error TSxxxx: message
    const pattern = /manifests\.mts\((\d+),\d+\): error (TS\d+: [^\n]*(?:\n {2,}[^\n]*)*)/g;
    let match;
    let matched = 0;
    while ((match = pattern.exec(output)) !== null) {
      const index = owner[Number(match[1]) - 1];
      errors[index] += (errors[index] ? "\n" : "") + match[2];
      matched++;
    }
    if (tsc.code !== 0 && matched === 0) {
      throw new Error(`tsc failed without a per-document error:\n${output}`);
    }
    return errors;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

async function validate(entries) {
  const strict = await strictErrors(entries.map((e) => e.doc));
  const results = [];
  for (let i = 0; i < entries.length; i++) {
    const schema = await schemaErrors(entries[i].doc);
    const errors = [schema && `schema: ${schema}`, strict[i] && `strict: ${strict[i]}`].filter(Boolean);
    results.push(errors.join("\n"));
  }
  return results;
}

const results = await validate(manifests);
manifests.forEach((entry, i) => record(results[i] === "", `valid: ${entry.source}`, results[i]));

// Every kind the chart and the jobs are meant to produce is there (a template
// that silently renders nothing would otherwise pass).
const kinds = new Set(manifests.map((m) => `${m.doc.apiVersion}/${m.doc.kind}`));
for (const expected of ["v1/ConfigMap", "apps/v1/Deployment", "v1/Service", "v1/PersistentVolumeClaim",
  "v1/Secret", "v1/ServiceAccount", "v1/Pod", "policy/v1/PodDisruptionBudget",
  "autoscaling/v2/HorizontalPodAutoscaler", "monitoring.coreos.com/v1/ServiceMonitor", "batch/v1/Job"]) {
  record(kinds.has(expected), `rendered or listed: ${expected}`);
}

// --- The Dockerfile ------------------------------------------------------------------

const dockerfileUtils = require("dockerfile-utils");
function dockerfileErrors(text) {
  return dockerfileUtils
    .validate(text, {})
    .map((d) => `line ${d.range.start.line + 1}: ${d.message}`)
    .join("\n");
}
const dockerfileResult = dockerfileErrors(fs.readFileSync(path.join(sourceDir, "Dockerfile"), "utf8"));
record(dockerfileResult === "", "Dockerfile passes dockerfile-utils", dockerfileResult);

// --- The validators reject broken files --------------------------------------------

const invalid = [];
for (const file of fs.readdirSync(invalidDir).sort()) {
  if (!file.endsWith(".yaml")) continue;
  const text = fs.readFileSync(path.join(invalidDir, file), "utf8");
  const expect = /^# expect: (.*)$/m.exec(text)?.[1]?.trim();
  invalid.push({ file, expect, entry: documents(text, file)[0] });
}
record(invalid.length >= 4, `found ${invalid.length} deliberately broken manifests`);
for (const file of fs.readdirSync(invalidDir).sort()) {
  if (!file.endsWith(".Dockerfile")) continue;
  const text = fs.readFileSync(path.join(invalidDir, file), "utf8");
  const expect = /^# expect: (.*)$/m.exec(text)?.[1]?.trim();
  const error = dockerfileErrors(text);
  const ok = Boolean(expect) && error.includes(expect);
  record(ok, `rejected: tests/deploy/invalid/${file}`, ok ? error.split("\n")[0] : `expected an error containing "${expect}", got: ${error || "(valid)"}`);
}
const invalidResults = await validate(invalid.map((c) => c.entry));
invalid.forEach((c, i) => {
  const error = invalidResults[i];
  const ok = Boolean(c.expect) && error !== "" && error.includes(c.expect);
  record(ok, `rejected: tests/deploy/invalid/${c.file}`,
    ok ? error.split("\n")[0] : `expected an error containing "${c.expect}", got: ${error || "(valid)"}`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
