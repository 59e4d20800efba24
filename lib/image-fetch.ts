// Fetching a base image into the cache: to <sha256>.img.part under a per-image lock, hashed and checked against the
// pinned sha256, format-checked, then promoted by one atomic rename. A failed fetch leaves the cache as it was:
// no .part, no lock file, and no cache directory it had to create.
import { existsSync, rmdirSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { cachedImage, CachedImage, checkSha, imageFiles, ImageFormat, Manifest, renderManifest, sha256File } from "./image.ts";
import { AivmError, ConfigError, EXIT } from "./errors.ts";
import { Runner } from "./run.ts";
import type { Image, Paths } from "./config/model.ts";
import { urlProblem } from "./validate.ts";
import { log } from "./log.ts";
import { acquireLock } from "./lock.ts";

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

  // the directories `mkdir -p` is about to make: removed again when the fetch fails and leaves them empty
  const made: string[] = [];
  for (let d = paths.imageCache; !existsSync(d) && d !== dirname(d); d = dirname(d)) made.push(d);
  await runner.exec(["mkdir", "-p", paths.imageCache], { what: "image cache" });
  let ok = false;
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
      ok = true;
      return { image: done, fetched: true };
    } catch (e) {
      await runner.remove(f.part).catch(() => {});
      if (wroteManifest && !existsSync(f.img)) await runner.remove(f.manifest).catch(() => {});
      throw e;
    }
  } finally {
    release(); // removes the lock file
    if (!ok) removeEmpty(made);
  }
}

/** rmdir each directory (innermost first) while it is empty: what a failed fetch made and left empty. */
function removeEmpty(dirs: string[]): void {
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch {
      return;
    }
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
