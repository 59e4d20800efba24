// The whole tree type-checks (bin, lib, test, e2e, bench): the compiler is the first reviewer of every move.
import { expect, test } from "bun:test";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

test("tsc --noEmit finds no type errors", () => {
  const r = Bun.spawnSync([join(ROOT, "node_modules/.bin/tsc"), "--noEmit", "-p", join(ROOT, "test/tsconfig.json")], { cwd: ROOT });
  const out = r.stdout.toString() + r.stderr.toString();
  expect(out.split("\n").filter((l) => l.includes("error TS"))).toEqual([]);
  expect(r.exitCode).toBe(0);
}, 120_000);
