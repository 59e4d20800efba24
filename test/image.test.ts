// The image cache: real temp cache directories and real file:// fixtures; cp, mv and qemu-img run for real through
// the ZxBackend, curl is scripted (it writes the --output file itself), so every byte on disk is what the code did.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { aivm, isolatedEnv, BUN, ROOT } from "./helpers/cli.ts";
import { setVerbosity } from "../lib/log.ts";
import { ZxBackend, Result, Runner, ExecOptions } from "../lib/run.ts";
import type { Paths, StoreDoc } from "../lib/config/model.ts";
import { ConfigError, AivmError } from "../lib/errors.ts";
import { applyPrune, cachedImage, imageFiles, imageReferences, listCache, planPrune, readManifest, renderManifest, sha256File, STALE_PART_MS, verifyCache } from "../lib/image.ts";
import { acquireLock } from "../lib/lock.ts";
import { loadStore, parseStore } from "../lib/config/store.ts";
import { ensureImage, fetchArgv, parseImageInfo } from "../lib/image-fetch.ts";

setVerbosity({ quiet: true });

const has = (t: string) => !!Bun.which(t);
if (!has("qemu-img") && process.env.CI === "true") throw new Error("qemu-img is missing: the image tests need it under CI");
const withQemuImg = has("qemu-img") ? test : test.skip;

type Override = (argv: string[], opts: ExecOptions) => Promise<Partial<Result> | undefined> | Partial<Result> | undefined;

/** The real backend, recording every call; `override` answers some commands itself (curl, a failing cp). */
class RecordingBackend extends ZxBackend {
  calls: string[][] = [];
  constructor(private override?: Override) {
    super();
  }
  async exec(argv: string[], opts: ExecOptions): Promise<Result> {
    this.calls.push(argv);
    const r = await this.override?.(argv, opts);
    if (r) return { exitCode: r.exitCode ?? 0, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
    if (argv[0] === "qemu-img" && !has("qemu-img")) return { exitCode: 0, stdout: JSON.stringify({ format: "raw" }), stderr: "" };
    return super.exec(argv, opts);
  }
  ran(cmd: string): boolean {
    return this.calls.some((c) => c[0] === cmd);
  }
}

function runnerWith(override?: Override, opts: { dryRun?: boolean } = {}) {
  const backend = new RecordingBackend(override);
  const printed: string[] = [];
  const runner = new Runner(backend, { isRoot: true, interactive: false, yes: true, dryRun: opts.dryRun, print: (t) => printed.push(t) });
  return { runner, backend, printed };
}

const tmps: string[] = [];
afterEach(() => {
  while (tmps.length) rmSync(tmps.pop()!, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "aivm-image-"));
  tmps.push(d);
  return d;
}

function pathsIn(dir: string): Paths {
  return { vmRoot: join(dir, "vms"), imageCache: join(dir, "cache"), sshIdentity: join(dir, "id"), sshPubkey: join(dir, "id.pub"), libvirtUri: "qemu:///system" };
}

const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

/** A raw fixture of random bytes; returns its file:// URL and sha256. */
function rawFixture(dir: string, name = "base.raw", size = 64 * 1024): { url: string; sha256: string; path: string; bytes: Uint8Array } {
  const bytes = crypto.getRandomValues(new Uint8Array(size));
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return { url: `file://${path}`, sha256: sha(bytes), path, bytes };
}

/** Every file in a directory with its content hash: equal snapshots mean byte-for-byte equal. */
function snapshot(dir: string): Record<string, string> {
  if (!existsSync(dir)) return {};
  return Object.fromEntries(readdirSync(dir).sort().map((n) => [n, sha(readFileSync(join(dir, n)))]));
}

async function failure(p: Promise<unknown>): Promise<AivmError> {
  try {
    await p;
  } catch (e) {
    return e as AivmError;
  }
  throw new Error("expected a failure");
}

describe("fetchArgv", () => {
  test.each([
    ["https://example.test/a.img", false, ["curl", "--fail", "--location", "--proto", "=https", "--proto-redir", "=https", "-sS", "--output", "/c/x.part", "--", "https://example.test/a.img"]],
    ["https://example.test/a.img", true, ["curl", "--fail", "--location", "--proto", "=https", "--proto-redir", "=https", "--progress-bar", "--output", "/c/x.part", "--", "https://example.test/a.img"]],
    ["file:///srv/images/a%20b.img", false, ["cp", "--reflink=auto", "--", "/srv/images/a b.img", "/c/x.part"]],
  ])("%s (progress %p)", (url, progress, argv) => {
    expect(fetchArgv(url, "/c/x.part", progress)).toEqual(argv);
  });
});

describe("parseImageInfo", () => {
  test("qcow2 and raw are accepted", () => {
    expect(parseImageInfo(JSON.stringify({ format: "qcow2", "virtual-size": 1 }), "x")).toBe("qcow2");
    expect(parseImageInfo(JSON.stringify({ format: "raw" }), "x")).toBe("raw");
  });
  test.each([
    [JSON.stringify({ format: "vmdk" }), /format vmdk; only qcow2 and raw/],
    [JSON.stringify({ format: "qcow2", "backing-filename": "/etc/shadow" }), /backing file/],
    ["not json", /no JSON/],
  ])("%s is refused", (json, why) => {
    expect(() => parseImageInfo(json, "x")).toThrow(why);
  });
});

describe("ensureImage with file:// sources", () => {
  test("copies, verifies, records the manifest and promotes atomically", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    const { runner, backend } = runnerWith();
    const r = await ensureImage(runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false });
    const f = imageFiles(paths.imageCache, fx.sha256);
    expect(r.fetched).toBe(true);
    expect(r.image).toEqual({ sha256: fx.sha256, path: f.img, format: "raw" });
    expect(sha(readFileSync(f.img))).toBe(fx.sha256);
    expect(existsSync(f.part)).toBe(false);
    expect(readManifest(f.manifest)).toMatchObject({ sha256: fx.sha256, format: "raw", source: fx.url });
    expect(cachedImage(paths, fx.sha256)).toEqual(r.image);
    expect(backend.calls.map((c) => c[0])).toEqual(["mkdir", "cp", "qemu-img", "mv"]);
    expect(backend.ran("curl")).toBe(false);
  });

  test("a second fetch uses the cache: no copy, no hashing, fetched=false", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    await ensureImage(runnerWith().runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false });
    const before = snapshot(paths.imageCache);
    rmSync(fx.path); // the source is gone: only the cache can answer
    const { runner, backend } = runnerWith();
    const r = await ensureImage(runner, paths, { url: fx.url, sha256: fx.sha256 });
    expect(r.fetched).toBe(false);
    expect(backend.calls).toEqual([]);
    expect(snapshot(paths.imageCache)).toEqual(before);
  });

  test("a sha256 mismatch exits 1 naming expected and got, removes the .part and leaves the cache byte-for-byte unchanged", async () => {
    const d = tmp();
    const paths = pathsIn(d);
    const other = rawFixture(d, "other.raw");
    await ensureImage(runnerWith().runner, paths, { url: other.url, sha256: other.sha256 }, { progress: false });
    const before = snapshot(paths.imageCache);
    const fx = rawFixture(d);
    const pinned = "0".repeat(64);
    const e = await failure(ensureImage(runnerWith().runner, paths, { url: fx.url, sha256: pinned }, { progress: false }));
    expect(e).toBeInstanceOf(AivmError);
    expect(e.exitCode).toBe(1);
    expect(e.why).toBe(`sha256 mismatch for ${fx.url}: expected ${pinned}, got ${fx.sha256}`);
    const after = snapshot(paths.imageCache);
    expect(after).toEqual(before);
    expect(cachedImage(paths, pinned)).toBeNull();
  });

  test("a missing source exits 1 with one clear line and creates nothing", async () => {
    const d = tmp();
    const paths = pathsIn(d);
    const { runner, backend } = runnerWith();
    const e = await failure(ensureImage(runner, paths, { url: `file://${d}/nope.img`, sha256: "a".repeat(64) }));
    expect(e.exitCode).toBe(1);
    expect(e.why).toBe(`source ${d}/nope.img does not exist or is not a file`);
    expect(backend.calls).toEqual([]);
    expect(existsSync(paths.imageCache)).toBe(false);
  });

  test("a copy that fails half-way (full disk) exits 1, removes the partial .part and promotes nothing", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    const { runner, backend } = runnerWith((argv) => {
      if (argv[0] !== "cp") return undefined;
      writeFileSync(argv[argv.length - 1]!, fx.bytes.slice(0, 1000)); // what a full disk leaves behind
      return { exitCode: 1, stderr: `cp: error writing '${argv[argv.length - 1]}': No space left on device` };
    });
    const e = await failure(ensureImage(runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false }));
    expect(e.exitCode).toBe(1);
    expect(e.why).toContain(`could not copy ${fx.url}`);
    expect(e.why).toContain("No space left on device");
    expect(existsSync(paths.imageCache)).toBe(false); // no .part, no lock file, not even the directory it made
    expect(backend.ran("mv")).toBe(false);
  });

  test("a leftover .part from an interrupted fetch is replaced, not trusted", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    const f = imageFiles(paths.imageCache, fx.sha256);
    mkdirSync(paths.imageCache, { recursive: true });
    writeFileSync(f.part, "garbage from a killed download");
    const r = await ensureImage(runnerWith().runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false });
    expect(r.fetched).toBe(true);
    expect(sha(readFileSync(f.img))).toBe(fx.sha256);
    expect(existsSync(f.part)).toBe(false);
  });

  withQemuImg("detects qcow2 with qemu-img info", async () => {
    const d = tmp();
    const src = join(d, "base.qcow2");
    await new ZxBackend().exec(["qemu-img", "create", "-q", "-f", "qcow2", src, "16M"], {});
    const digest = await sha256File(src);
    const paths = pathsIn(d);
    const r = await ensureImage(runnerWith().runner, paths, { url: `file://${src}`, sha256: digest }, { progress: false });
    expect(r.image.format).toBe("qcow2");
  });

  withQemuImg("a qcow2 with a backing file is refused: nothing cached, no .part", async () => {
    const d = tmp();
    const backing = join(d, "backing.qcow2");
    const src = join(d, "overlay.qcow2");
    const zx = new ZxBackend();
    await zx.exec(["qemu-img", "create", "-q", "-f", "qcow2", backing, "16M"], {});
    await zx.exec(["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", src], {});
    const digest = await sha256File(src);
    const paths = pathsIn(d);
    const e = await failure(ensureImage(runnerWith().runner, paths, { url: `file://${src}`, sha256: digest }, { progress: false }));
    expect(e.why).toContain("backing file");
    expect(existsSync(paths.imageCache)).toBe(false); // no .part, no lock file, not even the directory it made
  });

  test("--dry-run prints mkdir, copy and rename, and writes nothing", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    const { runner, backend, printed } = runnerWith(undefined, { dryRun: true });
    const r = await ensureImage(runner, paths, { url: fx.url, sha256: fx.sha256 });
    const f = imageFiles(paths.imageCache, fx.sha256);
    expect(r.fetched).toBe(true);
    expect(printed).toEqual([`mkdir -p ${paths.imageCache}`, `cp --reflink=auto -- ${fx.path} ${f.part}`, `mv -T ${f.part} ${f.img}`]);
    expect(backend.calls).toEqual([]);
    expect(existsSync(paths.imageCache)).toBe(false);
  });

  test("an invalid sha256 or URL handed in directly is a config error (78), before anything runs", async () => {
    const d = tmp();
    const { runner, backend } = runnerWith();
    expect((await failure(ensureImage(runner, pathsIn(d), { url: "file:///x", sha256: "../../etc/passwd" }))).exitCode).toBe(78);
    expect((await failure(ensureImage(runner, pathsIn(d), { url: "http://x/y", sha256: "a".repeat(64) }))).exitCode).toBe(78);
    expect(backend.calls).toEqual([]);
  });

  test("while another process holds the image's lock: a short wait fails with one line, a longer wait succeeds after it", async () => {
    const d = tmp();
    const fx = rawFixture(d);
    const paths = pathsIn(d);
    const lock = imageFiles(paths.imageCache, fx.sha256).lock;
    const script = join(d, "hold.ts");
    writeFileSync(script, `import { acquireLock } from ${JSON.stringify(join(ROOT, "lib/lock.ts"))};\nacquireLock(${JSON.stringify(lock)}, { waitMs: 0 });\nprocess.stdout.write("locked\\n");\nawait Bun.sleep(1500);\n`);
    const holder = Bun.spawn([BUN, script], { cwd: ROOT, stdout: "pipe", stderr: "inherit" });
    const reader = holder.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe("locked\n");
    const e = await failure(ensureImage(runnerWith().runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false, lockWaitMs: 100 }));
    expect(e.exitCode).toBe(1);
    expect(e.why).toContain(`another aivm process (pid ${holder.pid}) holds ${lock}`);
    const r = await ensureImage(runnerWith().runner, paths, { url: fx.url, sha256: fx.sha256 }, { progress: false, lockWaitMs: 10_000 });
    expect(r.fetched).toBe(true);
    expect(await holder.exited).toBe(0);
  });

  test("two processes fetching the same image at once: one copies, the other waits and reuses it; the cache is sound", async () => {
    const d = tmp();
    const fx = rawFixture(d, "base.raw", 4 * 1024 * 1024);
    const paths = pathsIn(d);
    const script = join(d, "fetch.ts");
    writeFileSync(script, [
      `import { ensureImage } from ${JSON.stringify(join(ROOT, "lib/image-fetch.ts"))};`,
      `import { realRunner } from ${JSON.stringify(join(ROOT, "lib/run.ts"))};`,
      `const r = await ensureImage(realRunner({ yes: true, interactive: false }), ${JSON.stringify(paths)}, ${JSON.stringify({ url: fx.url, sha256: fx.sha256 })}, { progress: false });`,
      `process.stdout.write(JSON.stringify(r));`,
    ].join("\n"));
    const run = () => Bun.spawn([BUN, script], { cwd: ROOT, env: isolatedEnv(), stdout: "pipe", stderr: "pipe" });
    const procs = [run(), run()];
    const outs = await Promise.all(procs.map(async (p) => ({ code: await p.exited, out: await new Response(p.stdout).text(), err: await new Response(p.stderr).text() })));
    for (const o of outs) expect(o).toMatchObject({ code: 0 });
    const results = outs.map((o) => JSON.parse(o.out));
    expect(results.map((r) => r.fetched).sort()).toEqual([false, true]);
    expect(results[0].image).toEqual(results[1].image);
    const v = await verifyCache(paths);
    expect(v.map((x) => x.ok)).toEqual([true]);
    expect(readdirSync(paths.imageCache).filter((n) => n.endsWith(".part"))).toEqual([]);
  });
});

describe("ensureImage with https:// sources (curl scripted: it writes the --output file)", () => {
  const URL = "https://images.example.test/base.img";

  function curlWrites(bytes: Uint8Array, exitCode = 0, stderr = "") {
    return (argv: string[]) => {
      if (argv[0] !== "curl") return undefined;
      writeFileSync(argv[argv.indexOf("--output") + 1]!, bytes);
      return { exitCode, stderr };
    };
  }

  test("downloads with curl to the .part file, then verifies and promotes", async () => {
    const d = tmp();
    const bytes = crypto.getRandomValues(new Uint8Array(10_000));
    const paths = pathsIn(d);
    const { runner, backend } = runnerWith(curlWrites(bytes));
    const r = await ensureImage(runner, paths, { url: URL, sha256: sha(bytes) }, { progress: false });
    const f = imageFiles(paths.imageCache, sha(bytes));
    expect(r).toEqual({ fetched: true, image: { sha256: sha(bytes), path: f.img, format: "raw" } });
    expect(backend.calls.find((c) => c[0] === "curl")).toEqual(fetchArgv(URL, f.part, false));
    expect(readManifest(f.manifest)?.source).toBe(URL);
  });

  test("with progress (stderr is a terminal) curl draws its bar on the inherited terminal; without it, it is silent", async () => {
    const bytes = crypto.getRandomValues(new Uint8Array(100));
    for (const progress of [true, false]) {
      const seen: { argv: string[]; inherit?: boolean }[] = [];
      const { runner } = runnerWith((argv, opts) => {
        if (argv[0] === "curl") seen.push({ argv, inherit: opts.inherit });
        return curlWrites(bytes)(argv);
      });
      await ensureImage(runner, pathsIn(tmp()), { url: URL, sha256: sha(bytes) }, { progress });
      expect(seen[0]!.inherit).toBe(progress);
      expect(seen[0]!.argv).toContain(progress ? "--progress-bar" : "-sS");
    }
  });

  test("an HTTP error (curl exit 22) exits 1 with curl's reason; no .part, nothing promoted", async () => {
    const d = tmp();
    const paths = pathsIn(d);
    const digest = "b".repeat(64);
    const { runner } = runnerWith(curlWrites(new Uint8Array(0), 22, "curl: (22) The requested URL returned error: 404"));
    const e = await failure(ensureImage(runner, paths, { url: URL, sha256: digest }, { progress: false }));
    expect(e.exitCode).toBe(1);
    expect(e.why).toContain(`could not download ${URL}`);
    expect(e.why).toContain("error: 404");
    expect(existsSync(paths.imageCache)).toBe(false); // no .part, no lock file, not even the directory it made
  });

  test("a short read (curl exit 18) exits 1; the partial .part is removed", async () => {
    const d = tmp();
    const bytes = crypto.getRandomValues(new Uint8Array(10_000));
    const paths = pathsIn(d);
    const { runner } = runnerWith(curlWrites(bytes.slice(0, 5000), 18, "curl: (18) transfer closed with 5000 bytes remaining to read"));
    const e = await failure(ensureImage(runner, paths, { url: URL, sha256: sha(bytes) }, { progress: false }));
    expect(e.why).toContain("bytes remaining");
    expect(existsSync(imageFiles(paths.imageCache, sha(bytes)).part)).toBe(false);
    expect(cachedImage(paths, sha(bytes))).toBeNull();
  });

  test("a truncated body that curl reports as success is caught by the sha256 check", async () => {
    const d = tmp();
    const bytes = crypto.getRandomValues(new Uint8Array(10_000));
    const paths = pathsIn(d);
    const { runner, backend } = runnerWith(curlWrites(bytes.slice(0, 5000)));
    const e = await failure(ensureImage(runner, paths, { url: URL, sha256: sha(bytes) }, { progress: false }));
    expect(e.why).toBe(`sha256 mismatch for ${URL}: expected ${sha(bytes)}, got ${sha(bytes.slice(0, 5000))}`);
    expect(backend.ran("qemu-img")).toBe(false);
    expect(existsSync(paths.imageCache)).toBe(false); // no .part, no lock file, not even the directory it made
  });
});

/** Put an image in the cache directly (as a build would), optionally with kernel and initrd. */
function seedCache(paths: Paths, bytes: Uint8Array, o: { kernel?: boolean; source?: string } = {}): string {
  const digest = sha(bytes);
  const f = imageFiles(paths.imageCache, digest);
  mkdirSync(paths.imageCache, { recursive: true });
  writeFileSync(f.img, bytes);
  if (o.kernel) {
    writeFileSync(f.kernel, "kernel");
    writeFileSync(f.initrd, "initrd");
  }
  writeFileSync(f.manifest, renderManifest({
    sha256: digest, format: "qcow2", source: o.source ?? "debootstrap:bookworm", created: "2026-01-01T00:00:00.000Z",
    ...(o.kernel ? { kernel: `${digest}.vmlinuz`, initrd: `${digest}.initrd`, cmdline: "root=/dev/vda rw console=ttyS0" } : {}),
  }));
  return digest;
}

const bytesOf = (s: string) => new TextEncoder().encode(s);

describe("cachedImage", () => {
  test("resolves kernel and initrd in the cache directory; missing kernel file means not cached", () => {
    const paths = pathsIn(tmp());
    const digest = seedCache(paths, bytesOf("disk"), { kernel: true });
    const f = imageFiles(paths.imageCache, digest);
    expect(cachedImage(paths, digest)).toEqual({ sha256: digest, path: f.img, format: "qcow2", kernel: f.kernel, initrd: f.initrd, cmdline: "root=/dev/vda rw console=ttyS0" });
    rmSync(f.kernel);
    expect(cachedImage(paths, digest)).toBeNull();
  });

  test("an image without its manifest, or a manifest without its image, is not cached", () => {
    const paths = pathsIn(tmp());
    const a = seedCache(paths, bytesOf("a"));
    rmSync(imageFiles(paths.imageCache, a).manifest);
    expect(cachedImage(paths, a)).toBeNull();
    const b = seedCache(paths, bytesOf("b"));
    rmSync(imageFiles(paths.imageCache, b).img);
    expect(cachedImage(paths, b)).toBeNull();
  });
});

describe("list, verify, prune", () => {
  const doc = (used: string, def: string): StoreDoc => ({
    defaults: { image: { url: "file:///d.img", sha256: def } },
    networks: [{ name: "n1", subnet: "10.90.0.0/24" }],
    vms: [
      { name: "alpha", network: "n1", image: { url: "file:///u.img", sha256: used } },
      { name: "beta", network: "n1" },
    ],
  });

  test("imageReferences: VMs by name (defaults inherited) and [defaults.image]", () => {
    const refs = imageReferences(doc("a".repeat(64), "b".repeat(64)));
    expect(refs.get("a".repeat(64))).toEqual(["alpha"]);
    expect(refs.get("b".repeat(64))).toEqual(["beta", "[defaults.image]"]);
  });

  test("listCache reports format, size, source, kernel boot and users", () => {
    const paths = pathsIn(tmp());
    const used = seedCache(paths, bytesOf("used image"), { kernel: true });
    const unused = seedCache(paths, bytesOf("unused"), { source: "file:///x.img" });
    const entries = listCache(paths, imageReferences(doc(used, "c".repeat(64))));
    const by = Object.fromEntries(entries.map((e) => [e.sha256, e]));
    expect(by[used]).toMatchObject({ format: "qcow2", size: 10, kernelBoot: true, usedBy: ["alpha"], source: "debootstrap:bookworm" });
    expect(by[unused]).toMatchObject({ size: 6, kernelBoot: false, usedBy: [], source: "file:///x.img" });
    expect(entries.map((e) => e.sha256)).toEqual([used, unused].sort());
  });

  test("verifyCache rehashes: a corrupted image is reported and kept", async () => {
    const paths = pathsIn(tmp());
    const good = seedCache(paths, bytesOf("good"));
    const bad = seedCache(paths, bytesOf("bad"));
    writeFileSync(imageFiles(paths.imageCache, bad).img, "bit rot");
    const results = await verifyCache(paths);
    expect(results.find((r) => r.sha256 === good)).toMatchObject({ ok: true, got: good });
    expect(results.find((r) => r.sha256 === bad)).toMatchObject({ ok: false, got: sha("bit rot"), expected: bad });
    expect(existsSync(imageFiles(paths.imageCache, bad).img)).toBe(true);
  });

  test("planPrune: unreferenced images with all their files, stale unlocked .part files, orphaned manifests; nothing else", () => {
    const paths = pathsIn(tmp());
    const used = seedCache(paths, bytesOf("used"));
    const def = seedCache(paths, bytesOf("default"));
    const unused = seedCache(paths, bytesOf("unused"), { kernel: true });
    const dir = paths.imageCache;
    const stale = join(dir, `${"1".repeat(64)}.img.part`);
    const fresh = join(dir, `${"2".repeat(64)}.img.part`);
    const fetching = join(dir, `${"3".repeat(64)}.img.part`);
    for (const p of [stale, fresh, fetching]) writeFileSync(p, "partial");
    const old = new Date(Date.now() - STALE_PART_MS - 60_000);
    utimesSync(stale, old, old);
    utimesSync(fetching, old, old);
    const orphan = seedCache(paths, bytesOf("orphan"));
    rmSync(imageFiles(dir, orphan).img);
    const release = acquireLock(imageFiles(dir, "3".repeat(64)).lock, { waitMs: 0 });
    try {
      const plan = planPrune(paths, imageReferences(doc(used, def)));
      const f = imageFiles(dir, unused);
      expect(plan.images).toEqual([{ sha256: unused, files: [f.img, f.manifest, f.kernel, f.initrd], size: 6 }]);
      expect(plan.leftovers.sort()).toEqual([stale, imageFiles(dir, orphan).manifest].sort());
    } finally {
      release();
    }
  });

  test("applyPrune removes the planned files; under --dry-run it prints rm lines and removes nothing", async () => {
    const paths = pathsIn(tmp());
    const unused = seedCache(paths, bytesOf("unused"));
    const plan = planPrune(paths, new Map());
    const before = snapshot(paths.imageCache);
    const dry = runnerWith(undefined, { dryRun: true });
    await applyPrune(dry.runner, plan);
    expect(dry.printed).toEqual(plan.images[0]!.files.map((p) => `rm -rf -- ${p}`));
    expect(snapshot(paths.imageCache)).toEqual(before);
    const removed = await applyPrune(runnerWith().runner, plan);
    expect(removed).toEqual(plan.images[0]!.files);
    expect(cachedImage(paths, unused)).toBeNull();
    expect(readdirSync(paths.imageCache)).toEqual([]);
  });
});

describe("config validation of [image]", () => {
  test("a bad sha256 is rejected with exit 78 and the file position", () => {
    const text = `[defaults.image]\nurl = "file:///srv/base.img"\nsha256 = "ABC123"\n`;
    let e: unknown;
    try {
      parseStore(text, "/cfg.toml");
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).exitCode).toBe(78);
    expect((e as ConfigError).why).toMatch(/^\/cfg\.toml:3:1: defaults\.image\.sha256: "ABC123" is not a sha256/);
  });

  test("loadStore rejects a bad sha256 in a [[vms]] image and an http:// URL", () => {
    const d = tmp();
    const p = join(d, "config.toml");
    writeFileSync(p, `[[vms]]\nname = "a"\nnetwork = "n"\n[vms.image]\nurl = "http://x/y.img"\nsha256 = "${"g".repeat(64)}"\n`);
    let e: unknown;
    try {
      loadStore(p);
    } catch (x) {
      e = x;
    }
    expect((e as ConfigError).exitCode).toBe(78);
    expect((e as ConfigError).problems.join("\n")).toContain("vms[0].image.url");
    expect((e as ConfigError).problems.join("\n")).toContain("vms[0].image.sha256");
  });
});

describe("aivm image (the CLI, as a subprocess with real cp and qemu-img)", () => {
  function setup() {
    const env = isolatedEnv();
    tmps.push(env.HOME!);
    const fx = rawFixture(env.HOME!);
    const cfg = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
    mkdirSync(join(env.XDG_CONFIG_HOME!, "aivm"), { recursive: true });
    writeFileSync(cfg, `[defaults.image]\nurl = "${fx.url}"\nsha256 = "${fx.sha256}"\n`);
    const cache = join(env.XDG_CACHE_HOME!, "aivm", "images");
    return { env, fx, cache, img: join(cache, `${fx.sha256}.img`) };
  }

  test("path before fetch: exit 1, one line; fetch prints the path; path then prints it too", async () => {
    const s = setup();
    const r0 = await aivm(["image", "path"], { env: s.env });
    expect(r0).toMatchObject({ exitCode: 1, stdout: "" });
    expect(r0.stderr).toBe("aivm: image path: not cached: run aivm image fetch\n");
    const r1 = await aivm(["image", "fetch"], { env: s.env });
    expect(r1.exitCode).toBe(0);
    expect(r1.stdout).toBe(`${s.img}\n`);
    const r2 = await aivm(["image", "path"], { env: s.env });
    expect(r2).toMatchObject({ exitCode: 0, stdout: `${s.img}\n` });
  });

  test("fetch --vm NAME fetches that VM's own image; a bad sha256 in the config exits 78 and touches nothing", async () => {
    const s = setup();
    const own = rawFixture(s.env.HOME!, "own.raw");
    const cfg = join(s.env.XDG_CONFIG_HOME!, "aivm", "config.toml");
    writeFileSync(cfg, `[[networks]]\nname = "n1"\nsubnet = "10.91.0.0/24"\n\n[[vms]]\nname = "a"\nnetwork = "n1"\n\n[[vms]]\nname = "b"\nnetwork = "n1"\n[vms.image]\nurl = "${own.url}"\nsha256 = "${own.sha256}"\n`);
    const r = await aivm(["image", "fetch", "--vm", "b"], { env: s.env });
    expect(r).toMatchObject({ exitCode: 0, stdout: `${join(s.cache, own.sha256)}.img\n` });
    const unknown = await aivm(["image", "fetch", "--vm", "zz"], { env: s.env });
    expect(unknown.exitCode).toBe(2);
    const before = snapshot(s.cache);
    writeFileSync(cfg, `[defaults.image]\nurl = "${s.fx.url}"\nsha256 = "${s.fx.sha256.toUpperCase()}"\n`);
    const bad = await aivm(["image", "fetch"], { env: s.env });
    expect(bad.exitCode).toBe(78);
    expect(bad.stderr.split("\n")[0]).toContain("config.toml:3:1: defaults.image.sha256:");
    expect(snapshot(s.cache)).toEqual(before);
  });

  test("fetch --dry-run prints the commands on stdout and writes nothing", async () => {
    const s = setup();
    const r = await aivm(["image", "fetch", "--dry-run"], { env: s.env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`cp --reflink=auto -- ${s.fx.path} ${s.img}.part`);
    expect(existsSync(s.cache)).toBe(false);
  });

  test("list --json, verify, then a corrupted image: verify exits 1 and deletes nothing", async () => {
    const s = setup();
    await aivm(["image", "fetch"], { env: s.env });
    const l = await aivm(["image", "list", "--json"], { env: s.env });
    expect(JSON.parse(l.stdout)).toEqual([expect.objectContaining({ sha256: s.fx.sha256, format: "raw", size: 64 * 1024, source: s.fx.url, kernelBoot: false, usedBy: ["[defaults.image]"] })]);
    const t = await aivm(["image", "list"], { env: s.env });
    expect(t.stdout.split("\n")[0]).toMatch(/^SHA256\s+FORMAT\s+SIZE\s+KERNEL-BOOT\s+USED-BY\s+SOURCE$/);
    expect(t.stdout).toContain(`${s.fx.sha256.slice(0, 12)}  raw     64.0 KiB  no           [defaults.image]  ${s.fx.url}`);
    const v = await aivm(["image", "verify"], { env: s.env });
    expect(v).toMatchObject({ exitCode: 0, stdout: `ok       ${s.fx.sha256} ${s.img}\n` });
    writeFileSync(s.img, "corrupted");
    const bad = await aivm(["image", "verify", "--json"], { env: s.env });
    expect(bad.exitCode).toBe(1);
    expect(JSON.parse(bad.stdout)[0]).toMatchObject({ ok: false, got: sha("corrupted") });
    expect(bad.stderr).toContain(`aivm: image verify: 1 cached image(s) do not match their sha256: ${s.fx.sha256.slice(0, 12)}`);
    expect(existsSync(s.img)).toBe(true);
  });

  test("prune keeps the referenced image, asks consent (refused without a terminal), removes with --yes", async () => {
    const s = setup();
    await aivm(["image", "fetch"], { env: s.env });
    const paths = { ...pathsIn(s.env.HOME!), imageCache: s.cache };
    const unused = seedCache(paths, bytesOf("unused"));
    const noTty = await aivm(["image", "prune"], { env: s.env });
    expect(noTty.exitCode).toBe(2);
    expect(noTty.stderr).toContain("needs your approval");
    expect(cachedImage(paths, unused)).not.toBeNull();
    const dry = await aivm(["image", "prune", "--dry-run"], { env: s.env });
    expect(dry.stdout).toContain(`rm -rf -- ${join(s.cache, unused)}.img`);
    expect(cachedImage(paths, unused)).not.toBeNull();
    const yes = await aivm(["image", "prune", "--yes"], { env: s.env });
    expect(yes.exitCode).toBe(0);
    expect(yes.stdout.trim().split("\n").sort()).toEqual([`${join(s.cache, unused)}.img`, `${join(s.cache, unused)}.json`]);
    expect(cachedImage(paths, unused)).toBeNull();
    expect(cachedImage(paths, s.fx.sha256)).not.toBeNull();
    const again = await aivm(["image", "prune", "--yes"], { env: s.env });
    expect(again).toMatchObject({ exitCode: 0, stdout: "" });
    expect(again.stderr).toContain("nothing to prune");
  });

  test("build without --debootstrap and a bad --suite are usage errors (exit 2)", async () => {
    const s = setup();
    const a = await aivm(["image", "build"], { env: s.env });
    expect(a.exitCode).toBe(2);
    expect(a.stderr.split("\n")[0]).toBe("aivm: image build: say how to build: --debootstrap is the only builder");
    const b = await aivm(["image", "build", "--debootstrap", "--suite", "../x"], { env: s.env });
    expect(b.exitCode).toBe(2);
  });

  test("build --debootstrap --dry-run reaches buildDebootstrap with --suite and --mirror, and builds nothing", async () => {
    const s = setup();
    const r = await aivm(["image", "build", "--debootstrap", "--dry-run", "--suite", "bookworm", "--mirror", "file:///srv/mirror"], { env: s.env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^debootstrap .*bookworm .*file:\/\/\/srv\/mirror/m);
    expect(existsSync(s.cache)).toBe(false);
  });
});
