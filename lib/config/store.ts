// The config store on disk: load and parse (exit 78 with positions), lint, atomic locked save.
import { existsSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { StoreDoc } from "./model.ts";
import { AivmError, ConfigError, EXIT } from "../errors.ts";
import { keyPositions, locate, validateDoc } from "./validate.ts";
import { parseToml, plain, renderToml } from "./toml.ts";
import { withLock } from "../lock.ts";
import { writeFileAtomicSync } from "../fsutil.ts";
import { sha256hex } from "../digest.ts";
import { shellJoin } from "../shell.ts";
import { describeAction } from "../steps.ts";

export interface Store {
  path: string;
  doc: StoreDoc;
  /** sha256 of the file as read, or null when it did not exist */
  hash: string | null;
  text: string | null;
}

function sha(text: string): string {
  return sha256hex(text);
}

/** Parse and validate; problems carry file:line:col. Throws ConfigError (exit 78) listing all. */
export function parseStore(text: string, path: string): StoreDoc {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text);
  } catch (e) {
    const err = e as { line?: number; col?: number; message?: string };
    const where = err.line !== undefined ? `${path}:${err.line + 1}:${(err.col ?? 0) + 1}` : path;
    throw new ConfigError(`${where}: ${err.message ?? "parse error"}`, "fix the file, then run `aivm config lint`");
  }
  const problems = validateDoc(raw);
  if (problems.length) {
    const positions = keyPositions(text);
    const lines = problems.map((p) => `${locate(path, p.path, positions)}: ${p.message}`);
    throw new ConfigError(lines[0]!, problems.length > 1 ? `${problems.length - 1} more problem(s): run \`aivm config lint\`` : "run `aivm config lint`", lines);
  }
  return plain(raw) as StoreDoc;
}

export function loadStore(path: string): Store {
  if (!existsSync(path)) return { path, doc: {}, hash: null, text: null };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return { path, doc: parseStore(text, path), hash: sha(text), text };
}

/** Every problem in a file, one line each ([] when clean). */
export function lintFile(path: string): string[] {
  if (!existsSync(path)) return [`${path}: no such file (run \`aivm config init\`)`];
  const text = readFileSync(path, "utf8");
  try {
    parseStore(text, path);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

export function lockPath(path: string): string {
  return join(dirname(path), ".aivm-config.lock");
}

function currentHash(path: string): string | null {
  return existsSync(path) ? sha(readFileSync(path, "utf8")) : null;
}

export interface SaveOptions {
  dryRun?: boolean;
  print?: (text: string) => void;
  /** write this text (already parsed to `doc`, e.g. from `config edit`) instead of rendering `doc` */
  text?: string;
}

/** The text our emitter would write for a stored file (parsed afresh: callers may have mutated store.doc). */
function canonical(text: string, path: string): string | null {
  try {
    return renderToml(parseStore(text, path));
  } catch {
    return null;
  }
}

/** Temp files of a save killed half-way (kill -9). Only called under the store lock, so none is in use. */
function removeStaleTemps(path: string): void {
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try { names = readdirSync(dirname(path)); } catch { return; }
  for (const n of names) {
    if (n.startsWith(prefix) && n.endsWith(".tmp")) try { unlinkSync(join(dirname(path), n)); } catch {}
  }
}

/**
 * Write a new document for a store that was loaded earlier. Refuses (exit 1, nothing written) when the file
 * changed on disk since it was read. Writes nothing when the rendered text is unchanged. Returns whether it wrote.
 */
export function saveStore(store: Store, doc: StoreDoc, opts: SaveOptions = {}): boolean {
  const problems = validateDoc(doc as Record<string, unknown>);
  if (problems.length) throw new AivmError("config", `refusing to save an invalid config: ${problems[0]!.message}`, EXIT.FAILED);
  const text = opts.text ?? renderToml(doc);
  if (text === store.text) return false;
  // unchanged content in another layout (hand-written, comments): nothing to write either
  if (opts.text === undefined && store.text !== null && text === canonical(store.text, store.path)) return false;
  if (opts.dryRun) {
    // as the real save: parent directories made, mode 0600; quoted so that it runs as pasted
    const print = opts.print ?? ((t: string) => process.stdout.write(t + "\n"));
    if (!existsSync(dirname(store.path))) print(shellJoin(["mkdir", "-p", dirname(store.path)]));
    print(describeAction({ kind: "write", path: store.path, content: text, mode: 0o600 }));
    return false;
  }
  return withLock(lockPath(store.path), () => {
    if (currentHash(store.path) !== store.hash) {
      throw new AivmError("config", `${store.path} changed on disk since it was read; nothing was written`, EXIT.FAILED, "re-run the command");
    }
    removeStaleTemps(store.path);
    writeFileAtomicSync(store.path, text, 0o600);
    store.text = text;
    store.hash = sha(text);
    store.doc = doc;
    return true;
  });
}

/** Lock, load, change, save: the pattern for concurrent writers updating distinct records. */
export function updateStore(path: string, change: (doc: StoreDoc) => StoreDoc | void, opts: SaveOptions = {}): { store: Store; wrote: boolean } {
  if (opts.dryRun) {
    const store = loadStore(path);
    const doc = structuredClone(store.doc);
    const wrote = saveStore(store, change(doc) ?? doc, opts);
    return { store, wrote };
  }
  return withLock(lockPath(path), () => {
    const store = loadStore(path);
    const doc = structuredClone(store.doc);
    const next = change(doc) ?? doc;
    const problems = validateDoc(next as Record<string, unknown>);
    if (problems.length) throw new AivmError("config", `refusing to save an invalid config: ${problems[0]!.message}`, EXIT.FAILED);
    const text = renderToml(next);
    if (text === store.text || (store.text !== null && text === renderToml(store.doc))) return { store, wrote: false };
    removeStaleTemps(path);
    writeFileAtomicSync(path, text, 0o600);
    Object.assign(store, { text, hash: sha(text), doc: next });
    return { store, wrote: true };
  }, { reentrant: true });
}
