// aivm config init|show|path|edit|discover|lint
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canPrompt, log, out, outJson } from "../log.ts";
import { ask } from "../prompt.ts";
import { AivmError, EXIT, PassThroughExit, UsageError, ConfigError } from "../errors.ts";
import { sha256Problem, urlProblem } from "../validate.ts";
import { BUILTIN, builtinPaths, defaultVmName, StoreDoc } from "../config/model.ts";
import { mutateArgs, context, Ctx, globalArgs, readArgs } from "./_shared.ts";
import { createIdentity, defaultsDoc, detectFrom, formatTable, readHostFacts, reviewRows, sshKeygenArgv } from "../detect.ts";
import { shellJoin } from "../run.ts";
import { lintFile, parseStore, saveStore, updateStore, type Store } from "../config/store.ts";
import { networkNames, resolveNetwork, resolvePaths, resolveVm, vmNames } from "../config/resolve.ts";
import { renderToml } from "../config/toml.ts";
import { group, leaf } from "./command.ts";
import { discover } from "../flows/discover.ts";

/** Hooks for tests: whether we may prompt, and how. */
export const hooks: { interactive?: () => boolean; ask?: (q: string) => Promise<string> } = {};
const interactive = () => (hooks.interactive ?? canPrompt)();
const question = (q: string) => (hooks.ask ?? ask)(q);

// ---------- init ----------

export interface InitOptions {
  defaults?: boolean;
  force?: boolean;
  imageUrl?: string;
  imageSha256?: string;
}

function imageOption(o: InitOptions): { url: string; sha256: string } | undefined {
  if (o.imageUrl === undefined && o.imageSha256 === undefined) return undefined;
  if (!o.imageUrl || !o.imageSha256) throw new UsageError("config init", "--image-url and --image-sha256 go together", "pass both, or neither");
  const p = urlProblem(o.imageUrl) ?? sha256Problem(o.imageSha256);
  if (p) throw new UsageError("config init", p);
  return { url: o.imageUrl, sha256: o.imageSha256 };
}

const hasDefaults = (doc: StoreDoc) => !!doc.defaults && Object.values(doc.defaults).some((s) => s && Object.keys(s).length);

export async function initConfig(ctx: Ctx, o: InitOptions): Promise<void> {
  const image = imageOption(o);
  const existing = () => new UsageError("config init", `${ctx.configPath} already has [defaults]; nothing was written`, "pass --force to replace them");
  if (hasDefaults(ctx.store.doc) && !o.force) throw existing();
  const review = !o.defaults && !ctx.yes;
  if (review && !interactive()) {
    throw new UsageError("config init", "the detected values need your review, but there is no terminal to ask on", "pass --defaults (or --yes) to accept them");
  }
  const vmRoot = ctx.store.doc.defaults?.paths?.vm_root ?? builtinPaths().vm_root;
  const facts = await readHostFacts(ctx.runner, vmRoot);
  const d = detectFrom(facts, ctx.store.doc, { image });
  if (review) {
    process.stderr.write(`Detected values for ${ctx.configPath}:\n${formatTable(reviewRows(d))}\n`);
    for (const w of d.warnings) log.warn(w);
    const a = (await question("Use these values? [Y/n] ")).trim().toLowerCase();
    if (a !== "" && a !== "y" && a !== "yes") throw new AivmError("config init", "not accepted; nothing was written", EXIT.FAILED, "edit later with `aivm config edit`, or pass --image-url/--image-sha256");
  } else {
    for (const w of d.warnings) log.warn(w);
  }
  if (d.createIdentity) {
    let made = false;
    try {
      made = await createIdentity(ctx.runner, d.sshIdentity, facts.hostname);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
    }
    if (!made) log.warn(`no SSH key: create it with \`${shellJoin(sshKeygenArgv(d.sshIdentity, facts.hostname))}\` before \`aivm up\``);
  }
  const { wrote } = updateStore(ctx.configPath, (doc) => {
    if (hasDefaults(doc) && !o.force) throw existing();
    doc.defaults = defaultsDoc(d, facts.home);
  }, { dryRun: ctx.dryRun, print: out });
  if (ctx.dryRun) return;
  log.info(wrote ? `wrote [defaults] to ${ctx.configPath}` : `${ctx.configPath} already holds these values`);
  out(ctx.configPath);
}

// ---------- show ----------

/** The resolved view: a stable shape for `config show --json`. */
export function resolvedView(path: string, doc: StoreDoc): { path: string; defaults: unknown; networks: unknown[]; vms: unknown[] } {
  const d = doc.defaults ?? {};
  const recordedNets = new Set((doc.networks ?? []).map((n) => n.name));
  return {
    path,
    defaults: {
      vm: { ...BUILTIN.vm, name: defaultVmName(), ...(d.vm ?? {}) },
      network: { ...BUILTIN.network, ...(d.network ?? {}) },
      firewall: { ...BUILTIN.firewall, ...(d.firewall ?? {}) },
      image: { ...BUILTIN.image, ...(d.image ?? {}) },
      paths: { ...builtinPaths(), ...(d.paths ?? {}) },
    },
    networks: networkNames(doc).map((n) => ({ ...resolveNetwork(doc, n), recorded: recordedNets.has(n) })),
    vms: vmNames(doc).map((n) => resolveVm(doc, n)),
  };
}

function noFile(path: string): ConfigError {
  return new ConfigError(`${path}: no such file`, "create it with `aivm config init`");
}

// ---------- edit ----------

function editorArgv(): string[] {
  const e = (process.env.VISUAL || process.env.EDITOR || "vi").trim();
  return e.split(/\s+/);
}

/** The store as read, even when invalid (edit is how a broken file gets fixed). */
function rawStore(path: string): Store {
  if (!existsSync(path)) return { path, doc: {}, hash: null, text: null };
  const text = readFileSync(path, "utf8");
  return { path, doc: {}, hash: createHash("sha256").update(text).digest("hex"), text };
}

export async function editConfig(ctx: Ctx): Promise<void> {
  const store = rawStore(ctx.configPath);
  const dir = mkdtempSync(join(tmpdir(), "aivm-edit-"));
  const tmp = join(dir, "config.toml");
  try {
    writeFileSync(tmp, store.text ?? renderToml({}), { mode: 0o600 });
    for (;;) {
      await ctx.runner.exec([...editorArgv(), tmp], { inherit: true, what: "editor" });
      const text = readFileSync(tmp, "utf8");
      let doc: StoreDoc;
      try {
        doc = parseStore(text, store.path);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        for (const p of e.problems) process.stderr.write(`aivm: config: ${p}\n`);
        if (!interactive()) throw new AivmError("config edit", "the edited config is invalid; it was discarded", EXIT.CONFIG);
        const a = (await question("Re-edit the file? [Y/n] (n discards your changes) ")).trim().toLowerCase();
        if (a === "" || a === "y" || a === "yes") continue;
        throw new AivmError("config edit", "changes discarded", EXIT.CONFIG);
      }
      if (text === store.text) {
        log.info("no changes");
        return;
      }
      saveStore(store, doc, { text });
      log.info(`saved ${store.path}`);
      return;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------- lint ----------

export interface LintProblem { file: string; line: number | null; col: number | null; message: string }

export function lintProblems(path: string): LintProblem[] {
  return lintFile(path).map((l) => {
    const rest = l.startsWith(path + ":") ? l.slice(path.length + 1) : l;
    const m = /^(\d+):(\d+): ([\s\S]*)$/.exec(rest);
    return m ? { file: path, line: Number(m[1]), col: Number(m[2]), message: m[3]! } : { file: path, line: null, col: null, message: rest.replace(/^\s+/, "") };
  });
}

// ---------- commands ----------

const initArgs = {
  ...mutateArgs,
  defaults: { type: "boolean", description: "accept the detected values without review" },
  force: { type: "boolean", description: "replace existing [defaults]" },
  "image-url": { type: "string", description: "pin this base image (https:// or file://) instead of Ubuntu 24.04", valueHint: "URL" },
  "image-sha256": { type: "string", description: "the sha256 of --image-url", valueHint: "SHA" },
} as const;

export default group("config", "the config store", {
  init: leaf({
    name: "init",
    description: "detect defaults (SSH key, free subnet, CPU/RAM/disk, base image) and write [defaults]",
    args: initArgs,
    run: ({ args }) => initConfig(context(args), { defaults: !!args.defaults, force: !!args.force, imageUrl: args["image-url"], imageSha256: args["image-sha256"] }),
  }),
  show: leaf({
    name: "show",
    description: "print the config (TOML as stored, or the resolved view with --json)",
    args: readArgs,
    run: ({ args }) => {
      const ctx = context(args);
      if (ctx.json) return outJson(resolvedView(ctx.configPath, ctx.store.doc));
      if (ctx.store.text === null) throw noFile(ctx.configPath);
      out(ctx.store.text);
    },
  }),
  path: leaf({
    name: "path",
    description: "print the config file path",
    args: globalArgs,
    run: ({ args }) => out(context(args, { loadConfig: false }).configPath),
  }),
  edit: leaf({
    name: "edit",
    description: "open the config in $VISUAL/$EDITOR, validate it, save it",
    args: globalArgs,
    run: ({ args }) => editConfig(context(args, { loadConfig: false })),
  }),
  discover: leaf({
    name: "discover",
    description: "list libvirt domains aivm does not manage and import the ones you accept (--yes: all) as [[vms]] records",
    args: mutateArgs,
    run: async ({ args }) => {
      const ctx = context(args);
      const uri = resolvePaths(ctx.store.doc).libvirtUri;
      const r = await discover(ctx.runner, uri, ctx.store.doc, {
        interactive: interactive(),
        print: out,
        save: (change) => {
          const { wrote } = updateStore(ctx.configPath, change, { dryRun: ctx.dryRun });
          if (wrote) log.info(`recorded in ${ctx.configPath}`);
        },
      });
      if (!r.found.length) return log.info(`no libvirt domains outside the config store at ${uri}`);
      if (r.listedOnly) log.warn("no terminal to ask on and no --yes: listed only, nothing imported (re-run in a terminal to choose, or with --yes to import all)");
      log.info(`discovered ${r.found.length}, imported ${r.imported.length}${r.imported.length ? ` (${r.imported.join(", ")})` : ""}, skipped ${r.skipped.length}`);
      if (r.imported.length && !ctx.dryRun) {
        log.info("imported VMs are marked `imported = true`: aivm did not create their disks, seeds or host keys, pinned no host key (`aivm status` shows SSH as unknown) and removes nothing of them outside their vm_root directory; their networks were recorded with the firewall off");
      }
    },
  }),
  lint: leaf({
    name: "lint",
    description: "list every problem in the config (file:line:col: problem); exit 78 when any",
    args: readArgs,
    run: ({ args }) => {
      const ctx = context(args, { loadConfig: false });
      const problems = lintProblems(ctx.configPath);
      if (problems.length === 1 && problems[0]!.line === null && /no such file/.test(problems[0]!.message)) throw noFile(ctx.configPath);
      if (ctx.json) outJson({ path: ctx.configPath, ok: problems.length === 0, problems });
      else if (problems.length) out(problems.map((p) => (p.line === null ? `${p.file}: ${p.message}` : `${p.file}:${p.line}:${p.col}: ${p.message}`)).join("\n"));
      else log.info(`${ctx.configPath}: no problems`);
      if (problems.length) throw new PassThroughExit(EXIT.CONFIG);
    },
  }),
});
