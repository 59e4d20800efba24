// Timing for `make bench`: two commands run in turn (A B A B ...), so a machine whose speed drifts affects both;
// the figure quoted is the median of the per-pair ratios. Peak memory comes from the kernel's own accounting
// of each finished child (rusage maxrss).

export interface Run { ms: number; rssMiB: number; code: number }

export async function runOnce(argv: string[], env?: Record<string, string>): Promise<Run> {
  const t = performance.now();
  const p = Bun.spawn(argv, { stdout: "ignore", stderr: "ignore", stdin: "ignore", ...(env ? { env } : {}) });
  const code = await p.exited;
  const ms = performance.now() - t;
  return { ms, rssMiB: (p.resourceUsage()?.maxRSS ?? 0) / 1024 / 1024, code };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export interface Pair { a: number; b: number; ratio: number; min: number; max: number; rssA: number }

/** A against B, `runs` pairs after one warm-up each: medians of A and B (ms), and of the per-pair ratio A/B. */
export async function pair(a: string[], b: string[], runs = 15, env?: Record<string, string>): Promise<Pair> {
  await runOnce(a, env);
  await runOnce(b, env);
  const ra: Run[] = [];
  const rb: Run[] = [];
  for (let i = 0; i < runs; i++) {
    ra.push(await runOnce(a, env));
    rb.push(await runOnce(b, env));
  }
  for (const r of [...ra, ...rb]) if (r.code !== 0) throw new Error(`bench: a command exited ${r.code}: ${(ra.includes(r) ? a : b).join(" ")}`);
  const ratios = ra.map((r, i) => r.ms / rb[i]!.ms);
  return { a: median(ra.map((r) => r.ms)), b: median(rb.map((r) => r.ms)), ratio: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), rssA: Math.max(...ra.map((r) => r.rssMiB)) };
}

/** One result line: what, the two medians, the ratio with its spread, and the goal it is held against. */
export function line(what: string, p: Pair, bName: string, goal?: number): string {
  const verdict = goal === undefined ? "" : p.ratio <= goal ? ` (goal: at most ${goal}x; within)` : ` (goal: at most ${goal}x; OVER)`;
  return `- ${what}: ${p.a.toFixed(1)} ms vs ${bName} ${p.b.toFixed(1)} ms = **${p.ratio.toFixed(2)}x** [${p.min.toFixed(2)}-${p.max.toFixed(2)}]${verdict}`;
}
