// The content-addressed base image cache, shared by all VMs: <cache>/<sha256>.img + <sha256>.json manifest
// (+ <sha256>.vmlinuz / <sha256>.initrd for images that boot their own kernel).
// Fetching goes to <sha256>.img.part under a per-image lock, is hashed and checked against the pinned sha256,
// and is promoted by one atomic rename: a failed fetch leaves the cache as it was.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { sha256Problem } from "./validate.ts";
import { ConfigError } from "./errors.ts";
import { BUILTIN, Paths, type StoreDoc } from "./config/model.ts";
import type { Runner } from "./run.ts";
import { acquireLock } from "./lock.ts";
import { resolveVm } from "./config/resolve.ts";
import { sha256stream } from "./digest.ts";

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

export function checkSha(sha256: string): string {
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
  const h = sha256stream();
  for await (const chunk of Bun.file(path).stream()) h.update(chunk);
  return h.hex();
}

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
