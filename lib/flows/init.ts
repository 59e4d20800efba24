// `config init`, `config edit`, `config show --json` and `config lint`: what the config commands do beyond one call.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AivmError, ConfigError, EXIT, UsageError } from "../errors.ts";
import { sha256Problem, urlProblem } from "../validate.ts";
import { BUILTIN, builtinPaths, defaultVmName, StoreDoc } from "../config/model.ts";
import { Runner } from "../run.ts";
import { lintFile, parseStore, saveStore, Store, StoreChangedError, updateStore } from "../config/store.ts";
import { createIdentity, defaultsDoc, detectFrom, formatTable, readHostFacts, reviewRows, sshKeygenArgv } from "../detect.ts";
import { log } from "../log.ts";
import { networkNames, resolveNetwork, resolveVm, vmNames } from "../config/resolve.ts";
import { renderToml } from "../config/toml.ts";
import { shellJoin, shellQuote } from "../shell.ts";
import { sha256hex } from "../digest.ts";

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

/**
 * `config init`: detect defaults (SSH key, free subnet, sizes, the pinned image), show them for review on a terminal
 * (unless --defaults or --yes), create the SSH key after consent, and write [defaults]. Returns whether it wrote.
 */
export async function initConfig(runner: Runner, store: Store, o: InitOptions): Promise<boolean> {
  const ctx = { configPath: store.path, store, runner, dryRun: runner.dryRun, yes: runner.yes };
  const image = imageOption(o);
  const existing = () => new UsageError("config init", `${ctx.configPath} already has [defaults]; nothing was written`, "pass --force to replace them");
  if (hasDefaults(ctx.store.doc) && !o.force) throw existing();
  const review = !o.defaults && !ctx.yes;
  if (review && !runner.interactive) {
    throw new UsageError("config init", "the detected values need your review, but there is no terminal to ask on", "pass --defaults (or --yes) to accept them");
  }
  const vmRoot = ctx.store.doc.defaults?.paths?.vm_root ?? builtinPaths().vm_root;
  const facts = await readHostFacts(ctx.runner, vmRoot);
  const d = detectFrom(facts, ctx.store.doc, { image });
  if (review) {
    process.stderr.write(`Detected values for ${ctx.configPath}:\n${formatTable(reviewRows(d))}\n`);
    for (const w of d.warnings) log.warn(w);
    const a = (await runner.ask("config init", "Use these values? [Y/n] ", "pass --defaults (or --yes) to accept them")).toLowerCase();
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
  }, { dryRun: ctx.dryRun, print: (t) => runner.print(t) });
  return wrote;
}

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

function editorArgv(): string[] {
  const e = (process.env.VISUAL || process.env.EDITOR || "vi").trim();
  return e.split(/\s+/);
}

/** The store as read, even when invalid (edit is how a broken file gets fixed). */
function rawStore(path: string): Store {
  if (!existsSync(path)) return { path, doc: {}, hash: null, text: null };
  const text = readFileSync(path, "utf8");
  return { path, doc: {}, hash: sha256hex(text), text };
}

/**
 * `config edit`: the store in $VISUAL/$EDITOR, validated, saved verbatim (comments kept). An invalid edit on a
 * terminal is offered for re-editing; without one it is discarded (exit 78). Returns whether it saved.
 */
export async function editConfig(runner: Runner, configPath: string): Promise<boolean> {
  const ctx = { configPath, runner };
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
        if (!runner.interactive) throw new AivmError("config edit", `the edited config is invalid; nothing was written, your edit is kept in ${keepEdit(store.path, text)}`, EXIT.CONFIG);
        const a = (await runner.ask("config edit", "Re-edit the file? [Y/n] (n discards your changes) ")).toLowerCase();
        if (a === "" || a === "y" || a === "yes") continue;
        throw new AivmError("config edit", "changes discarded", EXIT.CONFIG);
      }
      if (text === store.text) return false;
      try {
        saveStore(store, doc, { text });
      } catch (e) {
        if (!(e instanceof StoreChangedError)) throw e;
        const kept = keepEdit(store.path, text);
        throw new AivmError("config edit", `${store.path} changed on disk while you edited it; nothing was written, your edit is kept in ${kept}`, EXIT.FAILED, `compare them (diff ${shellQuote(store.path)} ${shellQuote(kept)}), then \`aivm config edit\` again`);
      }
      return true;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Keep an edit that could not be saved next to the store (0600, a new name each time); returns its path. */
function keepEdit(path: string, text: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "");
  for (let i = 0; ; i++) {
    const kept = `${path}.edit-${stamp}${i ? `-${i}` : ""}`;
    try {
      writeFileSync(kept, text, { mode: 0o600, flag: "wx" });
      return kept;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
}

export interface LintProblem { file: string; line: number | null; col: number | null; message: string }

export function lintProblems(path: string): LintProblem[] {
  return lintFile(path).map((l) => {
    const rest = l.startsWith(path + ":") ? l.slice(path.length + 1) : l;
    const m = /^(\d+):(\d+): ([\s\S]*)$/.exec(rest);
    return m ? { file: path, line: Number(m[1]), col: Number(m[2]), message: m[3]! } : { file: path, line: null, col: null, message: rest.replace(/^\s+/, "") };
  });
}

