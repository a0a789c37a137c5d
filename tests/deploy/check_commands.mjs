// Checks that what the deployment files ask of `oclip` is what the binary
// accepts:
//
//   1. Commands. Every `oclip SUBCOMMAND ...` in the rendered chart (default
//      and ci/ values: containers, init containers, exec probes, the helm test
//      pod, NOTES.txt), in deploy/jobs/ (manifests and the sbatch script), in the
//      Dockerfile and in the code blocks of the deploy READMEs is parsed
//      against `oclip SUBCOMMAND --help` of the built binary: every flag must
//      exist, integer flags get integers, boolean flags take no value, and no
//      stray positional arguments. `oclip launch ... -- oclip train ...` is two
//      commands. Subcommands are discovered from the files, not listed here;
//      one the binary does not have fails.
//   2. Wiring of the chart (each values set): server.yaml's ports are the
//      container ports, the probes' ports and the Services' targets; probes
//      ask the whole server's health service (""); --config names the mounted
//      ConfigMap; TLS/token file paths are the Secrets' mount points; the
//      ServiceMonitor, HPA, PDB and Services select what exists; every image
//      is oclip:<appVersion>-<cpu|cuda> with appVersion = the CMake project
//      version; the Dockerfile exposes the server's default ports.
//   3. The rendered server.yaml is served: the chart is rendered with the tiny
//      fixture models and bearer tokens, the ConfigMap and the token Secret
//      are written where the pod would mount them, and `oclip serve --config`
//      runs it; `oclip client health` finds every model SERVING, a call
//      without a token is refused and one with a token from the Secret is
//      answered, and SIGTERM exits 0.
//
//   node check_commands.mjs TOOLS_DIR SOURCE_DIR OCLIP_BINARY REFERENCE_DIR
// Prints one line per check and "N passed, N failed"; exit code 1
// on failure.

import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { createRequire } from "node:module";

const argv = process.argv.slice(2);
const [toolsDir, sourceDir, oclip, referenceArg] = argv.map((p) => path.resolve(p));
// $OCLIP_REFERENCE_DIR overrides the reference folder, as for the C++ tests.
const referenceDir = process.env.OCLIP_REFERENCE_DIR || referenceArg;
if (!referenceArg) {
  console.error("usage: node check_commands.mjs TOOLS_DIR SOURCE_DIR OCLIP_BINARY REFERENCE_DIR");
  process.exit(2);
}
const helm = path.join(toolsDir, "bin", "helm");
if (!fs.existsSync(helm)) {
  console.error(`no deploy tools in ${toolsDir}: run scripts/install-deploy-tools.sh ${toolsDir}`);
  process.exit(1);
}
const yaml = createRequire(path.join(toolsDir, "package.json"))("js-yaml");
const chartDir = path.join(sourceDir, "deploy", "helm", "oclip");

let passed = 0;
let failed = 0;
function record(ok, name, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? `\n     ${detail.replace(/\n/g, "\n     ")}` : ""}`);
}
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 << 20, ...options });
  return { code: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
}
function render(args) {
  const result = run(helm, ["template", "oclip", chartDir, "--namespace", "ml", ...args]);
  if (result.code !== 0) throw new Error(`helm template ${args.join(" ")}: ${result.stderr}`);
  return yaml.loadAll(result.stdout).filter(Boolean);
}

// --- What `oclip SUB --help` accepts ----------------------------------------------

const helpCache = new Map();
// { flags: Map(name -> "string"|"int"|"bool"|"repeated"), positional: [names] }
// or { missing: true } when the binary has no such subcommand.
function help(words) {
  const key = words.join(" ");
  if (helpCache.has(key)) return helpCache.get(key);
  const result = run(oclip, [...words, "--help"]);
  let spec;
  if (result.code !== 0) {
    spec = { missing: true, error: (result.stderr || result.stdout).split("\n")[0] };
  } else if (/^subcommands:/m.test(result.stdout)) {
    spec = { subcommands: [...result.stdout.matchAll(/^ {2}([a-z][a-z0-9-]*) /gm)].map((m) => m[1]) };
  } else {
    const usage = /^usage: oclip (.*?) \[flags\]/m.exec(result.stdout)?.[1] ?? key;
    const positional = usage.split(" ").slice(words.length).filter((w) => /^[A-Z]/.test(w));
    const flags = new Map([["help", "bool"]]);
    for (const m of result.stdout.matchAll(/^ {2}--([a-z0-9][a-z0-9-]*)( VALUE \(repeatable\)| VALUE| N)?/gm)) {
      flags.set(m[1], m[2] === " N" ? "int" : m[2] === " VALUE" ? "string" : m[2] ? "repeated" : "bool");
    }
    spec = { flags, positional };
  }
  helpCache.set(key, spec);
  return spec;
}

// A value that is filled in later (Kubernetes $(VAR), shell $VAR, a Helm
// expression, a <placeholder>) is not checked for its type.
const deferred = (value) => /\$|\{\{|<[A-Z_]+>/.test(value);

// Checks one oclip command line (argv[0] is the binary). Returns the problems.
function checkCommand(args, where) {
  const words = [];
  let i = 1;
  while (i < args.length && !args[i].startsWith("-")) {
    words.push(args[i]);
    const spec = help(words);
    if (spec.missing || !spec.subcommands) break;
    i++;
  }
  if (words.length === 0) return { label: `oclip ${args.slice(1).join(" ")}`, problems: [] };
  let spec = help(words);
  if (spec.subcommands) {
    return { label: `oclip ${words.join(" ")}`, problems: [`oclip ${words.join(" ")} needs a subcommand (${spec.subcommands.join(", ")})`] };
  }
  const label = `oclip ${words.join(" ")} (${where})`;
  if (spec.missing) {
    return { label, problems: [`the binary has no 'oclip ${words.join(" ")}': ${spec.error}`] };
  }
  const problems = [];
  const positional = [];
  for (i = words.length + 1; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") break; // launch: what follows is another command.
    const flag = /^--([a-z0-9][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    if (!flag) {
      if (arg.startsWith("-")) problems.push(`malformed flag '${arg}'`);
      else positional.push(arg);
      continue;
    }
    const [, name, inline] = flag;
    const kind = spec.flags.get(name);
    if (!kind) {
      problems.push(`unknown flag --${name}`);
      continue;
    }
    if (kind === "bool") {
      if (inline !== undefined && !/^(true|false|1|0)$/.test(inline)) problems.push(`--${name}=${inline}: a boolean`);
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) problems.push(`--${name} needs a value`);
    else if (kind === "int" && !deferred(value) && !/^-?[0-9]+$/.test(value)) problems.push(`--${name} ${value}: an integer is expected`);
  }
  if (positional.length > spec.positional.length) {
    problems.push(`unexpected arguments: ${positional.slice(spec.positional.length).join(" ")}`);
  }
  return { label, problems };
}

// Splits `oclip launch ... -- oclip train ...` into its commands.
function commandsOf(args) {
  const out = [args];
  const separator = args.indexOf("--");
  if (separator >= 0 && isOclip(args[separator + 1] ?? "")) {
    out[0] = args.slice(0, separator + 1);
    out.push(...commandsOf(args.slice(separator + 1)));
  }
  return out;
}
// The binary: `oclip` on PATH, or a path to it (/opt/oclip/bin/oclip,
// build/cli/oclip); not /home/oclip or /opt/oclip.
const isOclip = (word) => word === "oclip" || /\/(bin|cli)\/oclip$/.test(word);

// --- Commands in manifests ------------------------------------------------------

function podSpecs(doc) {
  if (doc.kind === "Pod") return [doc.spec];
  return doc.spec?.template?.spec ? [doc.spec.template.spec] : [];
}

function commandsInManifest(doc, source) {
  const found = [];
  for (const spec of podSpecs(doc)) {
    for (const container of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
      const where = `${source}: ${doc.kind}/${doc.metadata?.name} ${container.name}`;
      const imageIsOclip = /(^|\/)oclip:/.test(container.image ?? "");
      if (container.command && isOclip(container.command[0])) {
        found.push({ args: [...container.command, ...(container.args ?? [])], where });
      } else if (container.command && /(^|\/)(ba)?sh$/.test(container.command[0])) {
        found.push(...commandsInText(container.command.concat(container.args ?? []).join("\n"), where));
      } else if (!container.command && imageIsOclip && container.args) {
        // The image's entrypoint is oclip.
        found.push({ args: ["oclip", ...container.args.map(String)], where });
      }
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const command = container[probe]?.exec?.command;
        if (command && isOclip(command[0])) found.push({ args: command.map(String), where: `${where} ${probe}` });
      }
    }
  }
  return found;
}

// --- Commands in shell text (sbatch, Dockerfile RUN, README code blocks) -----

// Shell words: adjacent unquoted, "double-quoted" and 'single-quoted'
// pieces make one word (--train-data="/data/{0..9}.tar" is one argument).
function tokenize(line) {
  const tokens = [];
  const pattern = /(\|\||&&|[|;()<>`])|((?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'|;()<>`&]+|&(?=[^\s&]))+)/g;
  const unquote = (word) =>
    word.replace(/"((?:[^"\\]|\\.)*)"|'([^']*)'/g, (_, double, single) =>
      double !== undefined ? double.replace(/\\(.)/g, "$1") : single);
  let m;
  while ((m = pattern.exec(line)) !== null) {
    if (m[1]) tokens.push({ op: m[1] });
    else tokens.push({ word: unquote(m[2]) });
  }
  return tokens;
}

function commandsInText(text, where) {
  const found = [];
  const joined = text.replace(/\\\n/g, " ");
  for (const line of joined.split("\n")) {
    if (/^\s*#/.test(line)) continue;
    const tokens = tokenize(line);
    for (let i = 0; i < tokens.length; i++) {
      if (!tokens[i].word || !isOclip(tokens[i].word)) continue;
      // A subcommand follows (not a flag of another program, as in
      // `cmake --target oclip --parallel`, nor a label value).
      const next = tokens[i + 1]?.word;
      if (!next || !/^[a-z][a-z0-9-]*$/.test(next)) continue;
      const args = [];
      for (let j = i; j < tokens.length && tokens[j].word !== undefined; j++) args.push(tokens[j].word);
      found.push({ args, where });
      break;
    }
  }
  return found;
}

function codeBlocks(markdown) {
  return [...markdown.matchAll(/^```[a-z]*\n([\s\S]*?)^```/gm)].map((m) => m[1]).join("\n");
}

// --- 1. Commands --------------------------------------------------------------------

const valuesSets = [["default values", []]].concat(
  fs.readdirSync(path.join(chartDir, "ci")).filter((f) => f.endsWith(".yaml")).sort()
    .map((f) => [`ci/${f}`, ["-f", path.join(chartDir, "ci", f)]]),
);
const rendered = valuesSets.map(([label, args]) => ({ label, docs: render(args) }));

const commands = [];
for (const { label, docs } of rendered) {
  for (const doc of docs) commands.push(...commandsInManifest(doc, `chart (${label})`));
}
// NOTES.txt, as `helm install` prints it (rendered client-side, no cluster).
for (const [label, args] of valuesSets) {
  const install = run(helm, ["install", "oclip", chartDir, "--dry-run=client", "--namespace", "ml", ...args]);
  const notes = /^NOTES:\n([\s\S]*)$/m.exec(install.stdout)?.[1];
  record(install.code === 0 && Boolean(notes), `helm install --dry-run prints NOTES (${label})`, install.stderr);
  if (notes) commands.push(...commandsInText(notes, `NOTES.txt (${label})`));
}
const jobsDir = path.join(sourceDir, "deploy", "jobs");
for (const file of fs.readdirSync(jobsDir).sort()) {
  const text = fs.readFileSync(path.join(jobsDir, file), "utf8");
  if (/\.ya?ml$/.test(file)) {
    for (const doc of yaml.loadAll(text).filter(Boolean)) commands.push(...commandsInManifest(doc, `deploy/jobs/${file}`));
  } else {
    commands.push(...commandsInText(text, `deploy/jobs/${file}`));
  }
}
const dockerfile = fs.readFileSync(path.join(sourceDir, "Dockerfile"), "utf8");
commands.push(...commandsInText(dockerfile.split("\n").filter((l) => !/^\s*(ENTRYPOINT|CMD)\s*\[/.test(l)).join("\n"), "Dockerfile"));
for (const readme of ["deploy/README.md", "deploy/helm/oclip/README.md"]) {
  const file = path.join(sourceDir, readme);
  if (fs.existsSync(file)) commands.push(...commandsInText(codeBlocks(fs.readFileSync(file, "utf8")), readme));
}

const seen = new Set();
const subcommandsSeen = new Set();
for (const { args, where } of commands) {
  for (const command of commandsOf(args)) {
    const key = command.join("\u0000");
    if (seen.has(key)) continue;
    seen.add(key);
    const result = checkCommand(command, where);
    if (command[1]) subcommandsSeen.add(command[1]);
    record(result.problems.length === 0, result.label, result.problems.join("\n"));
  }
}
// The checker itself rejects what it should (so a pass above means something).
for (const [args, problem] of [
  [["oclip", "serve", "--config", "s.yaml", "--prot", "1"], "unknown flag --prot"],
  [["oclip", "serve", "--port", "grpc"], "--port grpc: an integer is expected"],
  [["oclip", "serve", "--log-json", "true"], "unexpected arguments: true"],
  [["oclip", "client", "health", "--address"], "--address needs a value"],
  [["oclip", "fetch", "ViT-B-32", "openai", "extra"], "unexpected arguments: extra"],
  [["oclip", "client"], "needs a subcommand"],
  [["oclip", "no-such-command", "--x"], "the binary has no 'oclip no-such-command'"],
]) {
  const problems = checkCommand(args, "self-test").problems ?? [];
  record(problems.some((p) => p.includes(problem)), `the checker rejects: ${args.join(" ")}`,
    problems.some((p) => p.includes(problem)) ? "" : `expected "${problem}", got: ${problems.join("; ") || "(accepted)"}`);
}

// The files use the commands they are about (a parser that found nothing
// would otherwise pass).
for (const expected of ["serve", "fetch", "client", "embed", "launch", "train"]) {
  record(subcommandsSeen.has(expected), `the deployment files use oclip ${expected}`);
}

// --- 2. Wiring of the chart -----------------------------------------------------------

const projectVersion = /project\(oclip VERSION ([0-9.]+)/.exec(fs.readFileSync(path.join(sourceDir, "CMakeLists.txt"), "utf8"))?.[1];
const chart = yaml.load(fs.readFileSync(path.join(chartDir, "Chart.yaml"), "utf8"));
record(chart.appVersion === projectVersion, `Chart appVersion ${chart.appVersion} = CMake project version ${projectVersion}`);

const example = yaml.load(fs.readFileSync(path.join(sourceDir, "deploy", "server.example.yaml"), "utf8"));
const serveHelp = run(oclip, ["serve", "--help"]).stdout;
const values = yaml.load(fs.readFileSync(path.join(chartDir, "values.yaml"), "utf8"));
const defaultPort = Number(/--port N\s+gRPC port \(([0-9]+)/.exec(serveHelp)?.[1]);
const defaultMetricsPort = Number(/--metrics-port N\s+metrics port \(([0-9]+)/.exec(serveHelp)?.[1]);
record(defaultPort === example.server.port && defaultPort === values.server.grpcPort,
  `default gRPC port: serve --help ${defaultPort}, server.example.yaml ${example.server.port}, values ${values.server.grpcPort}`);
record(defaultMetricsPort === example.server.metrics_port && defaultMetricsPort === values.server.metricsPort,
  `default metrics port: serve --help ${defaultMetricsPort}, server.example.yaml ${example.server.metrics_port}, values ${values.server.metricsPort}`);
const exposed = /^EXPOSE (.*)$/m.exec(dockerfile)?.[1].split(/\s+/).map(Number) ?? [];
record(exposed.includes(defaultPort) && exposed.includes(defaultMetricsPort), `Dockerfile EXPOSE ${exposed.join(" ")}`);
record(/^ENTRYPOINT \["oclip"\]$/m.test(dockerfile) && /OCLIP_CACHE=\/var\/cache\/oclip/.test(dockerfile) &&
  /^VOLUME \["\/var\/cache\/oclip"\]$/m.test(dockerfile) && values.cache.mountPath === "/var/cache/oclip",
  "Dockerfile entrypoint oclip, cache volume = $OCLIP_CACHE = the chart's cache.mountPath");

const imagePattern = new RegExp(`(^|/)oclip:${projectVersion.replace(/\./g, "\\.")}-(cpu|cuda)$`);
const allDocs = rendered.flatMap(({ label, docs }) => docs.map((doc) => ({ label: `chart (${label})`, doc })));
for (const file of fs.readdirSync(jobsDir).filter((f) => /\.ya?ml$/.test(f))) {
  for (const doc of yaml.loadAll(fs.readFileSync(path.join(jobsDir, file), "utf8")).filter(Boolean)) {
    allDocs.push({ label: `deploy/jobs/${file}`, doc });
  }
}
// The pods run as the image's non-root user (the cache volume and fsGroup
// depend on it).
const imageUser = /^USER ([0-9]+):([0-9]+)$/m.exec(dockerfile);
record(imageUser !== null && Number(imageUser[1]) !== 0, `Dockerfile USER ${imageUser?.[1]}:${imageUser?.[2]} is not root`);
for (const { label, doc } of allDocs) {
  for (const spec of podSpecs(doc)) {
    const sc = spec.securityContext ?? {};
    const same = sc.runAsNonRoot === true && String(sc.runAsUser) === imageUser?.[1] && String(sc.runAsGroup) === imageUser?.[2];
    record(same, `pod of ${label} ${doc.kind}/${doc.metadata.name} runs as the image's user`,
      same ? "" : `securityContext ${JSON.stringify(sc)}, image USER ${imageUser?.[1]}:${imageUser?.[2]}`);
    for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
      record(imagePattern.test(c.image), `image of ${label} ${doc.kind}/${doc.metadata.name} ${c.name}: ${c.image}`,
        imagePattern.test(c.image) ? "" : `expected REGISTRY/oclip:${projectVersion}-cpu or -cuda (Dockerfile VARIANT)`);
    }
  }
}

const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);
for (const { label, docs } of rendered) {
  const problems = [];
  const find = (kind) => docs.filter((d) => d.kind === kind);
  const configMap = find("ConfigMap")[0];
  const deployment = find("Deployment")[0];
  const server = yaml.load(configMap.data["server.yaml"]);
  const pod = deployment.spec.template;
  const container = pod.spec.containers.find((c) => c.name === "server");
  const ports = Object.fromEntries(container.ports.map((p) => [p.name, p.containerPort]));
  const mounts = Object.fromEntries(container.volumeMounts.map((m) => [m.name, m.mountPath]));
  const volumes = Object.fromEntries(pod.spec.volumes.map((v) => [v.name, v]));
  const port = server.server.port;
  const metricsPort = server.server.metrics_port;

  const configArg = container.args[container.args.indexOf("--config") + 1];
  const configVolume = Object.entries(volumes).find(([, v]) => v.configMap?.name === configMap.metadata.name)?.[0];
  if (container.args[0] !== "serve" || !configVolume || configArg !== `${mounts[configVolume]}/server.yaml`) {
    problems.push(`--config ${configArg} is not the mounted ConfigMap ${configMap.metadata.name}`);
  }
  if (ports.grpc !== port) problems.push(`container port grpc ${ports.grpc} != server.yaml port ${port}`);
  if (metricsPort === -1 ? "metrics" in ports : ports.metrics !== metricsPort) {
    problems.push(`container port metrics ${ports.metrics} != server.yaml metrics_port ${metricsPort}`);
  }
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const p = container[probe];
    if (!p) problems.push(`no ${probe}`);
    else if (p.grpc) {
      if (p.grpc.port !== port || p.grpc.service !== "") problems.push(`${probe} grpc ${JSON.stringify(p.grpc)}: expected port ${port}, service ""`);
      if (server.tls) problems.push(`${probe} is a plaintext gRPC probe but the server has TLS`);
    } else if (p.exec) {
      const address = p.exec.command[p.exec.command.indexOf("--address") + 1];
      if (address !== `127.0.0.1:${port}`) problems.push(`${probe} --address ${address}: expected 127.0.0.1:${port}`);
      if (!server.tls) problems.push(`${probe} is an exec probe without TLS: use the native gRPC probe`);
    }
  }
  if (metricsPort !== -1 && pod.metadata.annotations?.["prometheus.io/port"] && pod.metadata.annotations["prometheus.io/port"] !== String(metricsPort)) {
    problems.push(`prometheus.io/port ${pod.metadata.annotations["prometheus.io/port"]} != ${metricsPort}`);
  }
  if (server.tls) {
    for (const key of ["cert_file", "key_file", "client_ca_file"]) {
      if (server.tls[key] && path.dirname(server.tls[key]) !== mounts.tls) problems.push(`tls.${key} ${server.tls[key]} is not under the tls mount ${mounts.tls}`);
    }
    const secret = docs.find((d) => d.kind === "Secret" && d.metadata.name === volumes.tls.secret.secretName);
    if (secret && !["tls.crt", "tls.key", "ca.crt"].every((k) => k in secret.data)) problems.push("the TLS Secret lacks tls.crt/tls.key/ca.crt");
  }
  if (server.auth?.tokens_file) {
    if (path.dirname(server.auth.tokens_file) !== mounts.auth) problems.push(`auth.tokens_file is not under the auth mount ${mounts.auth}`);
    const secret = docs.find((d) => d.kind === "Secret" && d.metadata.name === volumes.auth.secret.secretName);
    if (secret && !(path.basename(server.auth.tokens_file) in secret.data)) problems.push("the auth Secret lacks the tokens file");
  }
  // Pods other than the server's (the helm test pod) must not be selected.
  const otherPods = find("Pod");
  for (const service of find("Service")) {
    if (!subset(service.spec.selector, pod.metadata.labels)) problems.push(`Service ${service.metadata.name} selects no pod`);
    for (const other of otherPods) {
      if (subset(service.spec.selector, other.metadata.labels)) problems.push(`Service ${service.metadata.name} also selects Pod ${other.metadata.name}`);
    }
    for (const p of service.spec.ports) {
      if (!(p.targetPort in ports)) problems.push(`Service ${service.metadata.name} port ${p.name} targets ${p.targetPort}, not a container port`);
      if (ports[p.targetPort] !== p.port) problems.push(`Service ${service.metadata.name} port ${p.port} != container port ${ports[p.targetPort]}`);
    }
  }
  for (const monitor of find("ServiceMonitor")) {
    const services = find("Service").filter((s) => subset(monitor.spec.selector.matchLabels, s.metadata.labels));
    for (const e of monitor.spec.endpoints) {
      if (!services.some((s) => s.spec.ports.some((p) => p.name === e.port))) problems.push(`ServiceMonitor endpoint ${e.port}: no selected Service has that port`);
    }
  }
  for (const hpa of find("HorizontalPodAutoscaler")) {
    if (hpa.spec.scaleTargetRef.name !== deployment.metadata.name) problems.push("HPA scales another Deployment");
    if (deployment.spec.replicas !== undefined) problems.push("replicas is set although the HPA owns it");
  }
  for (const pdb of find("PodDisruptionBudget")) {
    if (!subset(pdb.spec.selector.matchLabels, pod.metadata.labels)) problems.push("the PDB selects no pod");
    for (const other of otherPods) {
      if (subset(pdb.spec.selector.matchLabels, other.metadata.labels)) problems.push(`the PDB also selects Pod ${other.metadata.name}`);
    }
  }
  for (const init of pod.spec.initContainers ?? []) {
    const [, model, tag] = init.args;
    if (!server.models.some((m) => m.model === model && m.pretrained === tag)) problems.push(`init container fetches ${model} ${tag}, which no model serves`);
    if (init.env.find((e) => e.name === "OCLIP_CACHE")?.value !== container.env.find((e) => e.name === "OCLIP_CACHE")?.value) {
      problems.push("the init container's OCLIP_CACHE differs from the server's");
    }
  }
  record(problems.length === 0, `chart wiring (${label})`, problems.join("\n"));
}

// --- 3. The rendered server.yaml is served ------------------------------------------------

async function serveRenderedConfig() {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "oclip-chart-serve-"));
  const tokens = ["chart-token-1", "chart-token-2"];
  const testValues = {
    models: [
      { name: "tiny-a", model: `${referenceDir}/tiny-vit.json`, pretrained: `${referenceDir}/tiny-vit.safetensors`,
        tokenizer: `${referenceDir}/bpe_simple_vocab_16e6.txt.gz`, devices: ["cpu"], precision: "fp32" },
      { name: "tiny-b", model: `${referenceDir}/tiny-vit.json`, pretrained: `${referenceDir}/tiny-vit.safetensors`,
        tokenizer: `${referenceDir}/bpe_simple_vocab_16e6.txt.gz`, devices: ["cpu"], max_batch_size: 4,
        max_queue_delay: "1ms", queue_capacity: 16 },
    ],
    server: { defaultModel: "tiny-b", shutdownGrace: "5s" },
    limits: { max_items_per_request: 8, max_message_bytes: "8MiB" },
    auth: { enabled: true, tokens },
  };
  const valuesFile = path.join(scratch, "values.yaml");
  fs.writeFileSync(valuesFile, yaml.dump(testValues));
  let server;
  try {
    const docs = render(["-f", valuesFile]);
    // Lay out the files as the pod sees them, under scratch/.
    const mountRoot = path.join(scratch, "pod");
    const configMap = docs.find((d) => d.kind === "ConfigMap");
    const secret = docs.find((d) => d.kind === "Secret" && d.data?.tokens);
    const rebase = (p) => path.join(mountRoot, p);
    const serverYaml = yaml.load(configMap.data["server.yaml"]);
    record(serverYaml.auth?.tokens_file !== undefined && secret !== undefined, "rendered server.yaml names the token file of a rendered Secret");
    fs.mkdirSync(path.dirname(rebase(serverYaml.auth.tokens_file)), { recursive: true });
    fs.writeFileSync(rebase(serverYaml.auth.tokens_file), Buffer.from(secret.data.tokens, "base64"));
    const configPath = rebase("/etc/oclip/config/server.yaml");
    fs.mkdirSync(path.dirname(configPath), { recursive: true });
    fs.writeFileSync(configPath, configMap.data["server.yaml"].replaceAll(serverYaml.auth.tokens_file, rebase(serverYaml.auth.tokens_file)));

    // The chart's ports are fixed (50051/9090); loopback and free ports here.
    server = spawn(oclip, ["serve", "--config", configPath, "--host", "127.0.0.1", "--port", "0",
      "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--threads", "1", "--preprocess-threads", "1"],
      { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    server.stderr.on("data", (d) => { stderr += d; });
    const exited = new Promise((resolve) => server.on("exit", (code, signal) => resolve(code ?? 128 + (os.constants.signals[signal] ?? 0))));
    const lines = readline.createInterface({ input: server.stdout });
    const listening = await Promise.race([
      new Promise((resolve) => lines.once("line", resolve)),
      exited.then(() => null),
    ]);
    record(listening !== null, "oclip serve --config <rendered ConfigMap> starts", listening ?? stderr);
    if (listening === null) return;
    lines.on("line", () => {});
    const port = /listening on [^:]+:([0-9]+)/.exec(listening)[1];
    const address = `127.0.0.1:${port}`;
    const health = run(oclip, ["client", "health", "--address", address, "--wait", "--timeout", "60s"]);
    record(health.code === 0, "oclip client health --wait: the server is SERVING", health.stderr);
    for (const model of testValues.models) {
      const r = run(oclip, ["client", "health", "--address", address, "--service", model.name]);
      record(r.code === 0, `model ${model.name} from values.models is SERVING`, r.stderr);
    }
    const refused = run(oclip, ["client", "models", "--address", address]);
    const isRefused = refused.code !== 0 && /UNAUTHENTICATED/.test(refused.stderr);
    record(isRefused, "a call without a token is refused (auth Secret in force)", isRefused ? "" : refused.stderr || refused.stdout);
    const allowed = run(oclip, ["client", "models", "--address", address, "--token", tokens[1]]);
    let listed = [];
    try {
      listed = JSON.parse(allowed.stdout);
    } catch {}
    const byName = Object.fromEntries(listed.map((m) => [m.name, m]));
    const served = testValues.models.every((m) => byName[m.name]?.ready) && byName["tiny-b"].default === true &&
      byName["tiny-b"].max_batch_size === 4;
    record(served, "a call with a token from the Secret lists both models, tiny-b the default with max_batch_size 4",
      served ? "" : allowed.stderr || allowed.stdout);
    server.kill("SIGTERM");
    const code = await exited;
    server = null;
    record(code === 0, `SIGTERM: exit ${code}`, code === 0 ? "" : stderr.split("\n").slice(-10).join("\n"));
  } finally {
    if (server) server.kill("SIGKILL");
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
await serveRenderedConfig();

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
