// The config store on disk: load and parse (exit 78 with positions), lint, atomic locked save.
import { existsSync, readdirSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { StoreDoc } from "./model.ts";
import { AivmError, ConfigError, EXIT } from "../errors.ts";
import { keyPositions, locate, validateDoc } from "./validate.ts";
import { parseToml, plain, renderToml } from "./toml.ts";
import { patchToml, pruneEmpty, sameValue } from "./patch.ts";
import { log } from "../log.ts";
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

const ERRNO: Record<string, string> = { EACCES: "permission denied", EPERM: "permission denied", EIO: "input/output error", ELOOP: "too many symbolic links" };

/** The text of a config file, or null when there is none. A directory or an unreadable file is exit 78, one line. */
export function readConfigText(path: string): string | null {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "";
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw new ConfigError(`${path}: cannot read: ${ERRNO[code] ?? (e as Error).message}`);
  }
  if (st.isDirectory()) throw new ConfigError(`${path}: is a directory, not a config file`);
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "";
    throw new ConfigError(`${path}: cannot read: ${ERRNO[code] ?? (e as Error).message}`);
  }
}

export function loadStore(path: string): Store {
  const text = readConfigText(path);
  if (text === null) return { path, doc: {}, hash: null, text: null };
  return { path, doc: parseStore(text, path), hash: sha(text), text };
}

/** Every problem in a file, one line each ([] when clean). A missing, unreadable or directory path throws (exit 78). */
export function lintFile(path: string): string[] {
  const text = readConfigText(path);
  if (text === null) throw new ConfigError(`${path}: no such file`, "create it with `aivm config init`");
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

/** What the file held, parsed afresh (callers may have mutated store.doc in place); null when none or unparsable. */
function storedDoc(store: Store): StoreDoc | null {
  if (store.text === null) return null;
  if (parsed?.text === store.text) return structuredClone(parsed.doc);
  try {
    const doc = plain(parseToml(store.text)) as StoreDoc;
    parsed = { text: store.text, doc };
    return structuredClone(doc);
  } catch {
    return null;
  }
}
let parsed: { text: string; doc: StoreDoc } | undefined;

/**
 * The text to write for `doc`: the stored text with only what changed rewritten (comments, order and formatting of
 * the rest kept), checked by parsing it back; our own rendering for a new file or a layout the patcher cannot keep.
 */
export function textFor(store: Store, doc: StoreDoc): string {
  const old = storedDoc(store);
  if (store.text === null || old === null || !store.text.trim()) return renderToml(doc);
  const patched = patchToml(store.text, old, doc);
  if (patched !== null) {
    try {
      if (sameValue(plain(parseToml(patched)), plain(pruneEmpty(doc)))) return patched;
    } catch {}
  }
  log.warn(`${store.path}: its layout could not be kept for this change; the file is rewritten in aivm's layout (comments dropped)`);
  return renderToml(doc);
}

/** The document is what the file already holds: nothing to write. */
function unchanged(store: Store, doc: StoreDoc): boolean {
  const old = storedDoc(store);
  return old !== null && sameValue(pruneEmpty(old), plain(pruneEmpty(doc)));
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

/** The file changed on disk since it was read: nothing was written (exit 1). */
export class StoreChangedError extends AivmError {
  constructor(path: string) {
    super("config", `${path} changed on disk since it was read; nothing was written`, EXIT.FAILED, "re-run the command");
  }
}

/**
 * Write a new document for a store that was loaded earlier. Refuses (exit 1, nothing written) when the file
 * changed on disk since it was read. Writes nothing when the rendered text is unchanged. Returns whether it wrote.
 */
export function saveStore(store: Store, doc: StoreDoc, opts: SaveOptions = {}): boolean {
  const problems = validateDoc(doc as Record<string, unknown>);
  if (problems.length) throw new AivmError("config", `refusing to save an invalid config: ${problems[0]!.message}`, EXIT.FAILED);
  if (opts.text === undefined && unchanged(store, doc)) return false;
  const text = opts.text ?? textFor(store, doc);
  if (text === store.text) return false;
  if (opts.dryRun) {
    // as the real save: parent directories made, mode 0600; quoted so that it runs as pasted
    const print = opts.print ?? ((t: string) => process.stdout.write(t + "\n"));
    if (!existsSync(dirname(store.path))) print(shellJoin(["mkdir", "-p", dirname(store.path)]));
    print(describeAction({ kind: "write", path: store.path, content: text, mode: 0o600 }));
    return false;
  }
  return withLock(lockPath(store.path), () => {
    if (currentHash(store.path) !== store.hash) throw new StoreChangedError(store.path);
    removeStaleTemps(store.path);
    writeFileAtomicSync(store.path, text, 0o600, { followSymlink: true });
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
    if (unchanged(store, next)) return { store, wrote: false };
    const text = textFor(store, next);
    if (text === store.text) return { store, wrote: false };
    removeStaleTemps(path);
    writeFileAtomicSync(path, text, 0o600, { followSymlink: true });
    Object.assign(store, { text, hash: sha(text), doc: next });
    return { store, wrote: true };
  }, { reentrant: true });
}
