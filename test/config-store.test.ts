// The store under concurrency and crashes: separate writer processes, kill -9 mid-save, stale locks,
// optimistic concurrency, no-op saves.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bigDoc } from "./helpers/config-writer.ts";
import { BUN, ROOT } from "./helpers/cli.ts";
import { renderToml } from "../lib/config/toml.ts";
import { loadStore, lockPath, parseStore, saveStore, updateStore } from "../lib/config/store.ts";
import { acquireLock, lockInternals } from "../lib/lock.ts";
import { AivmError } from "../lib/errors.ts";

const WRITER = join(ROOT, "test/helpers/config-writer.ts");
const tmp = () => mkdtempSync(join(tmpdir(), "aivm-store-"));

function spawnWriter(args: string[]) {
  return Bun.spawn([BUN, WRITER, ...args], { stdout: "pipe", stderr: "pipe", cwd: ROOT });
}

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return text.split("\n")[0]!;
}

describe("concurrent writers", () => {
  test("20 processes each adding a distinct [[networks]] record lose no update", async () => {
    const dir = tmp();
    const path = join(dir, "config.toml");
    writeFileSync(path, renderToml({ defaults: { vm: { cpus: 2 } } }));
    const procs = Array.from({ length: 20 }, (_, i) => spawnWriter(["add-network", path, `net-${i}`, `10.${100 + i}.0.0/24`]));
    const codes = await Promise.all(procs.map((p) => p.exited));
    const errs = await Promise.all(procs.map((p) => new Response(p.stderr).text()));
    expect(errs.filter(Boolean)).toEqual([]);
    expect(codes).toEqual(Array(20).fill(0));
    const store = loadStore(path);
    expect(store.doc.networks!.map((n) => n.name).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `net-${i}`).sort());
    expect(store.doc.defaults?.vm?.cpus).toBe(2);
    expect(readdirSync(dir).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    // each holder removed the lock file as it let go (a taker re-checks the file it locked is still the named one)
    expect(existsSync(lockPath(path))).toBe(false);
  }, 60_000);
});

describe("kill -9 during a save", () => {
  test("leaves the old or the new file, never a broken one", async () => {
    const dir = tmp();
    const path = join(dir, "config.toml");
    const initial = renderToml(bigDoc(5));
    writeFileSync(path, initial);
    const valid = new Set([initial, renderToml(bigDoc(0)), renderToml(bigDoc(1))]);
    const seen = new Set<string>();
    const rounds = 25;
    for (let i = 0; i < rounds; i++) {
      const p = spawnWriter(["loop-save", path]);
      expect(await firstLine(p.stdout as ReadableStream<Uint8Array>)).toBe("saving");
      await Bun.sleep(Math.random() * 400); // a cold save that replaces all 250 records (patched, then parsed back) takes 150-400 ms here
      p.kill(9);
      expect(await p.exited).not.toBe(0);
      const text = readFileSync(path, "utf8");
      expect(valid.has(text)).toBe(true); // byte-identical to one complete version
      expect(() => parseStore(text, path)).not.toThrow();
      seen.add(text);
    }
    // the writer did get to save: the kills landed among real saves, not before the first one
    expect(seen.size).toBeGreaterThan(1);
    // the next save takes the dead writer's lock and sweeps its half-written temp files
    expect(updateStore(path, (d) => { d.defaults!.vm!.cpus = 7; }).wrote).toBe(true);
    expect(readdirSync(dir).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    expect(loadStore(path).doc.defaults?.vm?.cpus).toBe(7);
  }, 120_000);
});

describe("lock", () => {
  test("a live holder blocks (exit 1 naming its pid); once it is killed -9 its lock is taken over at once", async () => {
    const dir = tmp();
    const path = join(dir, "config.toml");
    const holder = spawnWriter(["hold-lock", path]);
    expect(await firstLine(holder.stdout)).toBe("locked");
    let err: unknown;
    try {
      acquireLock(lockPath(path), { waitMs: 200 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AivmError);
    expect((err as AivmError).exitCode).toBe(1);
    expect((err as AivmError).why).toContain(`pid ${holder.pid}`);
    holder.kill(9);
    await holder.exited;
    expect(existsSync(lockPath(path))).toBe(true); // the stale lock file is still there
    const t0 = Date.now();
    const r = updateStore(path, (d) => { d.networks = [{ name: "n", subnet: "10.1.0.0/24" }]; });
    expect(r.wrote).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(existsSync(lockPath(path))).toBe(false); // and the taker left nothing behind
  }, 30_000);

  test("the lock is re-entrant only when asked", () => {
    const p = join(tmp(), "l.lock");
    const release = acquireLock(p);
    expect(() => acquireLock(p)).toThrow(/already held by this process/);
    acquireLock(p, { reentrant: true })();
    release();
    acquireLock(p, { waitMs: 0 })();
  });
});

describe("saveStore", () => {
  test("refuses (exit 1, nothing written) when the file changed on disk since it was read", () => {
    const path = join(tmp(), "config.toml");
    writeFileSync(path, renderToml({ defaults: { vm: { cpus: 2 } } }));
    const store = loadStore(path);
    const other = renderToml({ defaults: { vm: { cpus: 3 } } });
    writeFileSync(path, other);
    let err: unknown;
    try {
      saveStore(store, { defaults: { vm: { cpus: 4 } } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AivmError);
    expect((err as AivmError).exitCode).toBe(1);
    expect((err as AivmError).why).toContain("changed on disk since it was read");
    expect(readFileSync(path, "utf8")).toBe(other);
  });

  test("refuses when the file appeared after a read that found none", () => {
    const path = join(tmp(), "config.toml");
    const store = loadStore(path);
    writeFileSync(path, "# someone else\n");
    expect(() => saveStore(store, { defaults: { vm: { cpus: 4 } } })).toThrow(/changed on disk/);
    expect(readFileSync(path, "utf8")).toBe("# someone else\n");
  });

  test("a save that changes nothing writes nothing (mtime unchanged), also for a hand-written file", async () => {
    const dir = tmp();
    const path = join(dir, "config.toml");
    writeFileSync(path, renderToml({ defaults: { vm: { cpus: 2 } } }));
    const hand = join(dir, "hand.toml");
    writeFileSync(hand, "# mine\n[defaults.vm]\ncpus   = 2 # two\n");
    const before = [statSync(path).mtimeMs, statSync(hand).mtimeMs];
    await Bun.sleep(20);
    const s = loadStore(path);
    expect(saveStore(s, structuredClone(s.doc))).toBe(false);
    const h = loadStore(hand);
    expect(saveStore(h, structuredClone(h.doc))).toBe(false);
    expect(updateStore(path, () => {}).wrote).toBe(false);
    expect(updateStore(hand, (d) => d).wrote).toBe(false);
    expect([statSync(path).mtimeMs, statSync(hand).mtimeMs]).toEqual(before);
    expect(readFileSync(hand, "utf8")).toBe("# mine\n[defaults.vm]\ncpus   = 2 # two\n");
  });

  test("a save after an in-place change of store.doc does write", () => {
    const path = join(tmp(), "config.toml");
    writeFileSync(path, renderToml({ defaults: { vm: { cpus: 2 } } }));
    const s = loadStore(path);
    s.doc.defaults!.vm!.cpus = 5;
    expect(saveStore(s, s.doc)).toBe(true);
    expect(loadStore(path).doc.defaults?.vm?.cpus).toBe(5);
    // and the store can save again (its hash follows its own write)
    expect(saveStore(s, { ...s.doc, networks: [{ name: "x", subnet: "10.9.0.0/24" }] })).toBe(true);
  });

  test("refuses an invalid document (exit 1) and writes nothing", () => {
    const path = join(tmp(), "config.toml");
    writeFileSync(path, renderToml({}));
    const s = loadStore(path);
    expect(() => saveStore(s, { networks: [{ name: "Bad Name" }] })).toThrow(/refusing to save an invalid config/);
    expect(() => updateStore(path, (d) => { d.vms = [{ name: "v", network: "n;rm" }]; })).toThrow(/refusing/);
    expect(readFileSync(path, "utf8")).toBe(renderToml({}));
  });

  test("writes 0600 and creates the directory", () => {
    const path = join(tmp(), "deep", "er", "config.toml");
    expect(updateStore(path, (d) => { d.defaults = { vm: { cpus: 1 } }; }).wrote).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("--dry-run prints the file and writes nothing", () => {
    const path = join(tmp(), "config.toml");
    const printed: string[] = [];
    const r = updateStore(path, (d) => { d.defaults = { vm: { cpus: 1 } }; }, { dryRun: true, print: (t) => printed.push(t) });
    expect(r.wrote).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(printed.join("\n")).toContain(`cat > ${path} <<'AIVM_EOF'\n`);
    expect(printed.join("\n")).toContain("[defaults.vm]\ncpus = 1\n");
  });
});

describe("lock without flock (pid-file fallback)", () => {
  test("acquire, block, release; a dead holder's pid file is taken over", async () => {
    lockInternals.noFlock = true;
    try {
      const p = join(tmp(), "x.lock");
      const release = acquireLock(p);
      expect(readFileSync(p, "utf8")).toBe(String(process.pid));
      release();
      expect(existsSync(p)).toBe(false);
      const dead = Bun.spawn(["true"]);
      await dead.exited;
      writeFileSync(p, String(dead.pid));
      acquireLock(p, { waitMs: 0 })();
      writeFileSync(p, "1"); // init: alive
      expect(() => acquireLock(p, { waitMs: 50 })).toThrow(/pid 1/);
    } finally {
      lockInternals.noFlock = false;
    }
  });
});
