// A recording fake Backend with scripted replies, injected into the real Runner (no module mocks).

import { type Backend, type ExecOptions, type Result, Runner, type RunnerOptions } from "../../lib/run.ts";

export type Reply = Partial<Result> | ((argv: string[], opts: ExecOptions) => Partial<Result>);

export interface Call {
  kind: "exec" | "write" | "remove";
  argv?: string[];
  input?: string;
  path?: string;
  content?: string;
  mode?: number;
}

export class FakeBackend implements Backend {
  calls: Call[] = [];
  files = new Map<string, string>();
  private rules: { match: (argv: string[]) => boolean; reply: Reply; times?: number }[] = [];
  /** what an unmatched command gets; `throw` makes an unscripted command fail the test */
  unmatched: "ok" | "throw" = "throw";

  /** Reply to commands whose argv starts with `prefix` (strings) or matches `pred`. Later rules win. */
  on(prefix: string[] | ((argv: string[]) => boolean), reply: Reply, times?: number): this {
    const match = Array.isArray(prefix) ? (argv: string[]) => prefix.every((p, i) => argv[i] === p) : prefix;
    this.rules.unshift({ match, reply, times });
    return this;
  }

  async exec(argv: string[], opts: ExecOptions): Promise<Result> {
    this.calls.push({ kind: "exec", argv, input: opts.input });
    const rule = this.rules.find((r) => r.match(argv) && (r.times === undefined || r.times > 0));
    if (!rule) {
      if (this.unmatched === "throw") throw new Error(`FakeBackend: unscripted command: ${argv.join(" ")}`);
      return { exitCode: 0, stdout: "", stderr: "" };
    }
    if (rule.times !== undefined) rule.times--;
    const r = typeof rule.reply === "function" ? rule.reply(argv, opts) : rule.reply;
    return { exitCode: r.exitCode ?? 0, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
  }

  async writeFile(path: string, content: string, mode?: number): Promise<void> {
    this.calls.push({ kind: "write", path, content, mode });
    this.files.set(path, content);
  }

  async remove(path: string): Promise<void> {
    this.calls.push({ kind: "remove", path });
    this.files.delete(path);
  }

  /** argv of every exec, joined with spaces, in order */
  commands(): string[] {
    return this.calls.filter((c) => c.kind === "exec").map((c) => c.argv!.join(" "));
  }
}

export function fakeRunner(opts: RunnerOptions = {}): { runner: Runner; fake: FakeBackend; printed: string[] } {
  const fake = new FakeBackend();
  const printed: string[] = [];
  const runner = new Runner(fake, { isRoot: true, interactive: false, yes: true, print: (t) => printed.push(t), ...opts });
  return { runner, fake, printed };
}
