// The content-addressed base image cache, shared by all VMs: <cache>/<sha256>.img + <sha256>.json manifest
// (+ <sha256>.vmlinuz / <sha256>.initrd for images that boot their own kernel).
// Fetching goes to <sha256>.img.part under a per-image lock, is hashed and checked against the pinned sha256,
// and is promoted by one atomic rename: a failed fetch leaves the cache as it was.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sha256Problem, urlProblem } from "./validate.ts";
import { AivmError, ConfigError, EXIT } from "./errors.ts";
import { BUILTIN, Paths, type StoreDoc, type Image } from "./config/model.ts";
import type { Runner } from "./run.ts";
import { acquireLock } from "./lock.ts";
import { resolveVm } from "./config/resolve.ts";
import { log } from "./log.ts";

export type ImageFormat = "qcow2" | "raw";

export interface CachedImage {
  sha256: string;
  path: string;
  format: ImageFormat;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

/** <sha256>.json. kernel/initrd are file names in the cache directory (or absolute paths). */
export interface Manifest {
  /** sha256 of the .img content (what `image verify` checks) */
  sha256: string;
  format: ImageFormat;
  source: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  created: string;
}

/** A .part file older than this, whose lock nobody holds, is left over from an interrupted fetch. */
export const STALE_PART_MS = 60 * 60 * 1000;

export function imageFiles(cacheDir: string, sha256: string) {
  const base = join(cacheDir, sha256);
  return {
    dir: cacheDir,
    img: `${base}.img`,
    manifest: `${base}.json`,
    part: `${base}.img.part`,
    lock: `${base}.lock`,
    kernel: `${base}.vmlinuz`,
    initrd: `${base}.initrd`,
  };
}

function checkSha(sha256: string): string {
  const p = sha256Problem(sha256);
  if (p) throw new ConfigError(`image sha256 ${p}`);
  return sha256;
}

export function readManifest(path: string): Manifest | null {
  let m: Partial<Manifest>;
  try {
    m = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return null;
  }
  if (typeof m !== "object" || m === null || typeof m.sha256 !== "string" || (m.format !== "qcow2" && m.format !== "raw")) return null;
  return m as Manifest;
}

export function renderManifest(m: Manifest): string {
  return JSON.stringify(m, null, 2) + "\n";
}

/** The cached image for a sha256, from its manifest (no hashing); null unless the image and its manifest are both there. */
export function cachedImage(paths: Paths, sha256: string): CachedImage | null {
  const f = imageFiles(paths.imageCache, checkSha(sha256));
  const m = readManifest(f.manifest);
  if (!m || !existsSync(f.img)) return null;
  const inCache = (p: string) => (isAbsolute(p) ? p : join(f.dir, p));
  const kernel = m.kernel ? inCache(m.kernel) : undefined;
  const initrd = m.initrd ? inCache(m.initrd) : undefined;
  if ((kernel && !existsSync(kernel)) || (initrd && !existsSync(initrd))) return null;
  return {
    sha256,
    path: f.img,
    format: m.format,
    ...(kernel ? { kernel } : {}),
    ...(initrd ? { initrd } : {}),
    ...(m.cmdline ? { cmdline: m.cmdline } : {}),
  };
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The argv that puts `url` at `dest`: curl for https:// (progress bar when stderr is a terminal), cp for file://. */
export function fetchArgv(url: string, dest: string, progress = false): string[] {
  if (url.startsWith("file://")) return ["cp", "--reflink=auto", "--", fileURLToPath(url), dest];
  return ["curl", "--fail", "--location", "--proto", "=https", "--proto-redir", "=https", progress ? "--progress-bar" : "-sS", "--output", dest, "--", url];
}

/** The image format qemu-img detects, refusing anything but a self-contained qcow2 or raw image. */
export function parseImageInfo(json: string, what: string): ImageFormat {
  let info: { format?: string; "backing-filename"?: string };
  try {
    info = JSON.parse(json);
  } catch {
    throw new AivmError("image fetch", `qemu-img info gave no JSON for ${what}`, EXIT.FAILED);
  }
  if (info["backing-filename"]) throw new AivmError("image fetch", `${what} refers to a backing file (${info["backing-filename"]}); a base image must be self-contained`, EXIT.FAILED);
  if (info.format !== "qcow2" && info.format !== "raw") throw new AivmError("image fetch", `${what} is in format ${info.format ?? "unknown"}; only qcow2 and raw are supported`, EXIT.FAILED);
  return info.format;
}

export interface EnsureOptions {
  /** show curl's progress bar (default: when stderr is a terminal) */
  progress?: boolean;
  /** how long to wait for another process fetching the same image (default 3 h) */
  lockWaitMs?: number;
}

/**
 * The cached image for `image`, fetching and verifying it first when it is not cached.
 * A cached image is trusted by its manifest (`image verify` rehashes). A failed fetch (download or copy error,
 * sha256 mismatch, unsupported format, full disk) removes its .part file and throws (exit 1): the cache is unchanged.
 */
export async function ensureImage(runner: Runner, paths: Paths, image: Image, opts: EnsureOptions = {}): Promise<{ image: CachedImage; fetched: boolean }> {
  const sha = checkSha(image.sha256);
  const bad = urlProblem(image.url);
  if (bad) throw new ConfigError(`image url ${bad}`);
  const hit = cachedImage(paths, sha);
  if (hit) return { image: hit, fetched: false };

  const f = imageFiles(paths.imageCache, sha);
  const local = image.url.startsWith("file://");
  if (local) {
    const src = fileURLToPath(image.url);
    if (!existsSync(src) || !statSync(src).isFile()) throw new AivmError("image fetch", `source ${src} does not exist or is not a file`, EXIT.FAILED, "fix [image] url in the config");
  }
  const progress = opts.progress ?? (!!process.stderr.isTTY && !runner.dryRun);
  const argv = fetchArgv(image.url, f.part, progress);

  if (runner.dryRun) {
    await runner.exec(["mkdir", "-p", paths.imageCache]);
    await runner.exec(argv);
    await runner.exec(["mv", "-T", f.part, f.img]);
    return { image: { sha256: sha, path: f.img, format: "qcow2" }, fetched: true };
  }

  await runner.exec(["mkdir", "-p", paths.imageCache], { what: "image cache" });
  const release = await lockImage(f.lock, sha, opts.lockWaitMs ?? 3 * 60 * 60 * 1000);
  try {
    const again = cachedImage(paths, sha);
    if (again) return { image: again, fetched: false };
    log.info(`${local ? "copying" : "downloading"} ${image.url}`);
    let wroteManifest = false;
    try {
      if (existsSync(f.part)) await runner.remove(f.part);
      try {
        await runner.exec(argv, { inherit: progress, what: "image fetch" });
      } catch (e) {
        const why = e instanceof AivmError ? e.why : (e as Error).message;
        throw new AivmError("image fetch", `could not ${local ? "copy" : "download"} ${image.url}: ${why}`, EXIT.FAILED, "the image cache is unchanged");
      }
      const got = await sha256File(f.part);
      if (got !== sha) {
        throw new AivmError("image fetch", `sha256 mismatch for ${image.url}: expected ${sha}, got ${got}`, EXIT.FAILED, "nothing was cached; check the URL and the pinned sha256");
      }
      const info = await runner.read(["qemu-img", "info", "--output=json", f.part], { what: "qemu-img info" });
      const format = parseImageInfo(info.stdout, image.url);
      const manifest: Manifest = { sha256: sha, format, source: image.url, created: new Date().toISOString() };
      wroteManifest = true;
      await runner.writeFile(f.manifest, renderManifest(manifest), 0o644);
      await runner.exec(["mv", "-T", f.part, f.img], { what: "image cache" });
      const done = cachedImage(paths, sha);
      if (!done) throw new AivmError("image fetch", `${f.img} is missing after the rename`, EXIT.FAILED);
      log.success(`cached ${basename(f.img)} (${format})`);
      return { image: done, fetched: true };
    } catch (e) {
      await runner.remove(f.part).catch(() => {});
      if (wroteManifest && !existsSync(f.img)) await runner.remove(f.manifest).catch(() => {});
      throw e;
    }
  } finally {
    release();
  }
}

/** The per-image lock. Waits in small async sleeps (not one blocking wait), so Ctrl-C still works while another fetch runs. */
async function lockImage(lock: string, sha: string, waitMs: number): Promise<() => void> {
  const deadline = Date.now() + waitMs;
  let said = false;
  for (;;) {
    try {
      return acquireLock(lock, { waitMs: 0, what: "image fetch" });
    } catch (e) {
      if (!(e instanceof AivmError) || /held by this process/.test(e.why) || Date.now() >= deadline) throw e;
    }
    if (!said) log.info(`another aivm process is fetching ${sha.slice(0, 12)}; waiting for it`);
    said = true;
    await Bun.sleep(250);
  }
}

// ---------- the cache as a whole: list, verify, prune ----------

export interface CacheEntry {
  sha256: string;
  path: string;
  format: ImageFormat;
  size: number;
  source: string;
  kernelBoot: boolean;
  created: string;
  usedBy: string[];
}

/** sha256 -> who references it: VM names in the store, and "[defaults.image]". */
export function imageReferences(doc: StoreDoc): Map<string, string[]> {
  const refs = new Map<string, string[]>();
  const add = (sha: string, who: string) => refs.set(sha, [...(refs.get(sha) ?? []), who]);
  for (const v of doc.vms ?? []) add(resolveVm(doc, v.name).image.sha256, v.name);
  add({ ...BUILTIN.image, ...(doc.defaults?.image ?? {}) }.sha256, "[defaults.image]");
  return refs;
}

function cacheNames(cacheDir: string): string[] {
  try {
    return readdirSync(cacheDir);
  } catch {
    return [];
  }
}

/** Every complete cached image (image and manifest present), sorted by sha256. */
export function listCache(paths: Paths, refs: Map<string, string[]> = new Map()): CacheEntry[] {
  const out: CacheEntry[] = [];
  for (const name of cacheNames(paths.imageCache).sort()) {
    const m = /^([0-9a-f]{64})\.json$/.exec(name);
    if (!m) continue;
    const sha = m[1]!;
    const img = cachedImage(paths, sha);
    const man = readManifest(join(paths.imageCache, name));
    if (!img || !man) continue;
    out.push({
      sha256: sha,
      path: img.path,
      format: img.format,
      size: statSync(img.path).size,
      source: man.source,
      kernelBoot: !!(img.kernel && img.initrd),
      created: man.created,
      usedBy: refs.get(sha) ?? [],
    });
  }
  return out;
}

export interface VerifyResult {
  sha256: string;
  path: string;
  ok: boolean;
  /** the content hash found */
  got: string;
  /** what the manifest pins */
  expected: string;
}

/** Rehash every cached image against its manifest. Deletes nothing. */
export async function verifyCache(paths: Paths): Promise<VerifyResult[]> {
  const results: VerifyResult[] = [];
  for (const e of listCache(paths)) {
    const expected = readManifest(imageFiles(paths.imageCache, e.sha256).manifest)!.sha256;
    const got = await sha256File(e.path);
    results.push({ sha256: e.sha256, path: e.path, ok: got === expected, got, expected });
  }
  return results;
}

export interface PrunePlan {
  /** unreferenced images: every file of each */
  images: { sha256: string; files: string[]; size: number }[];
  /** interrupted fetches (older than an hour, nobody fetching) and manifests whose image is gone */
  leftovers: string[];
}

/** What `image prune` would remove: images nothing references, stale .part files, orphaned manifests. Pure but for reading the directory. */
export function planPrune(paths: Paths, refs: Map<string, string[]>, now = Date.now()): PrunePlan {
  const dir = paths.imageCache;
  const names = cacheNames(dir).sort();
  const plan: PrunePlan = { images: [], leftovers: [] };
  for (const e of listCache(paths, refs)) {
    if (e.usedBy.length) continue;
    const f = imageFiles(dir, e.sha256);
    const man = readManifest(f.manifest)!;
    const extra = [man.kernel, man.initrd].filter((x): x is string => !!x).map((x) => (isAbsolute(x) ? x : join(dir, x)));
    const files = [...new Set([f.img, f.manifest, f.kernel, f.initrd, ...extra])].filter((p) => existsSync(p) && p.startsWith(dir + "/"));
    plan.images.push({ sha256: e.sha256, files, size: e.size });
  }
  for (const name of names) {
    const part = /^([0-9a-f]{64})\.img\.part$/.exec(name);
    if (part) {
      const p = join(dir, name);
      if (now - statSync(p).mtimeMs > STALE_PART_MS && !lockHeld(imageFiles(dir, part[1]!).lock)) plan.leftovers.push(p);
      continue;
    }
    const man = /^([0-9a-f]{64})\.json$/.exec(name);
    if (man && !existsSync(imageFiles(dir, man[1]!).img) && !lockHeld(imageFiles(dir, man[1]!).lock)) plan.leftovers.push(join(dir, name));
  }
  return plan;
}

function lockHeld(lock: string): boolean {
  try {
    acquireLock(lock, { waitMs: 0 })();
    return false;
  } catch {
    return true;
  }
}

/** Remove what the plan lists (printed, not removed, under --dry-run). Returns the paths removed. */
export async function applyPrune(runner: Runner, plan: PrunePlan): Promise<string[]> {
  const removed: string[] = [];
  for (const p of [...plan.images.flatMap((i) => i.files), ...plan.leftovers]) {
    await runner.remove(p);
    removed.push(p);
  }
  return removed;
}

export function humanSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}
