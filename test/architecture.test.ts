// The shape of the house, checked on the real import graph: cli -> flows -> job modules -> config -> the base
// (Runner, Host, errors, logs, renderers, validators). Nothing imports upward, there are no import circles, only the
// CLI and the Runner import lazily, only the Runner starts programs, and no file in lib/ grows past 300 lines unless
// this test names it with a reason.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

function files(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((n) => {
    const rel = join(dir, n);
    return statSync(join(ROOT, rel)).isDirectory() ? files(rel) : rel.endsWith(".ts") && !rel.endsWith(".d.ts") ? [rel] : [];
  });
}

const SOURCES = [...files("bin"), ...files("lib")];
const text = new Map(SOURCES.map((f) => [f, readFileSync(join(ROOT, f), "utf8")]));

/** Our own modules a file imports (static and dynamic), as repo-relative paths. */
function imports(file: string): { to: string; dynamic: boolean }[] {
  const src = text.get(file)!;
  const out: { to: string; dynamic: boolean }[] = [];
  for (const m of src.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+["'](\.{1,2}\/[^"']+)["']/gm)) out.push({ to: m[1]!, dynamic: false });
  for (const m of src.matchAll(/^\s*import\s+["'](\.{1,2}\/[^"']+)["']/gm)) out.push({ to: m[1]!, dynamic: false });
  for (const m of src.matchAll(/import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) out.push({ to: m[1]!, dynamic: true });
  return out
    .map((i) => ({ ...i, to: relative(ROOT, resolve(ROOT, dirname(file), i.to)) }))
    .filter((i) => i.to.endsWith(".ts") && SOURCES.includes(i.to));
}

const BASE = new Set(["lib/run.ts", "lib/steps.ts", "lib/shell.ts", "lib/host.ts", "lib/digest.ts", "lib/errors.ts", "lib/log.ts", "lib/prompt.ts", "lib/render.ts", "lib/validate.ts", "lib/fsutil.ts", "lib/lock.ts", "lib/env.ts"]);

/** 5 bin, 4 cli, 3 flows, 2 job modules, 1 config, 0 the base. */
function rank(f: string): number {
  if (f.startsWith("bin/")) return 5;
  if (f.startsWith("lib/cli/")) return 4;
  if (f.startsWith("lib/flows/")) return 3;
  if (f.startsWith("lib/config/")) return 1;
  if (BASE.has(f)) return 0;
  return 2;
}
const LAYER = ["the base", "config", "job modules", "flows", "cli", "bin"];

/** Files allowed past 300 lines, and why. */
const LONG: Record<string, string> = {};

describe("architecture", () => {
  test("nothing imports upward (cli -> flows -> job modules -> config -> base)", () => {
    const up: string[] = [];
    for (const f of SOURCES) for (const i of imports(f)) if (rank(i.to) > rank(f)) up.push(`${f} (${LAYER[rank(f)]}) imports ${i.to} (${LAYER[rank(i.to)]})`);
    expect(up).toEqual([]);
  });

  test("no import circles (static or dynamic)", () => {
    const graph = new Map(SOURCES.map((f) => [f, imports(f).map((i) => i.to)]));
    const index = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const onStack = new Set<string>();
    const circles: string[][] = [];
    let n = 0;
    const visit = (v: string) => {
      index.set(v, n);
      low.set(v, n++);
      stack.push(v);
      onStack.add(v);
      for (const w of graph.get(v) ?? []) {
        if (!index.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
      if (low.get(v) === index.get(v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          scc.push(w);
        } while (w !== v);
        if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) circles.push(scc.sort());
      }
    };
    for (const f of SOURCES) if (!index.has(f)) visit(f);
    expect(circles).toEqual([]);
  });

  test("only lib/cli and the Runner load our own modules lazily (a package may be required where it is used, for startup time)", () => {
    const lazy = SOURCES.filter((f) => !f.startsWith("lib/cli/") && f !== "lib/run.ts" && /(?<!typeof )\bimport\(\s*["']\.|\brequire\(\s*["']\./.test(text.get(f)!));
    expect(lazy).toEqual([]);
  });

  test("only the Runner starts programs", () => {
    const spawners = SOURCES.filter((f) => f !== "lib/run.ts" && /\bBun\.spawn(Sync)?\b|from\s+["'](node:)?child_process["']|from\s+["']zx["']|import\(\s*["']zx["']\s*\)/.test(text.get(f)!));
    expect(spawners).toEqual([]);
  });

  test("no file in lib/ over about 300 lines unless named here with a reason", () => {
    const long = SOURCES.filter((f) => f.startsWith("lib/") && text.get(f)!.split("\n").length > 310 && !(f in LONG)).map((f) => `${f}: ${text.get(f)!.split("\n").length} lines`);
    expect(long).toEqual([]);
  });

  test("the allow-list names only files that exist and are still long", () => {
    for (const f of Object.keys(LONG)) expect(text.get(f)?.split("\n").length ?? 0).toBeGreaterThan(310);
  });

  test("the test reads a real graph (sanity: the dispatcher reaches the CLI, a flow reaches the Runner)", () => {
    expect(imports("bin/aivm.ts").map((i) => i.to)).toContain("lib/cli/root.ts");
    expect(imports("lib/cli/root.ts").filter((i) => i.dynamic).length).toBeGreaterThan(10);
    expect(imports("lib/flows/up.ts").map((i) => i.to).some((t) => rank(t) === 2)).toBe(true);
  });
});
