// A recording fake Backend with scripted replies, injected into the real Runner (no module mocks).

import { chmodSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { hostWith, type Host } from "../../lib/host.ts";
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
    const batch = virshBatchParts(argv);
    if (batch) return this.batch(argv.slice(0, 4), batch, opts);
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

  /** virsh 'a ; echo SEP ; b': each command answered (and recorded) as if run alone, the outputs joined as virsh does. */
  private async batch(prefix: string[], parts: { sep: string; cmds: string[][] }, opts: ExecOptions): Promise<Result> {
    const outs: string[] = [];
    let stderr = "";
    let exitCode = 0;
    for (const cmd of parts.cmds) {
      // an unscripted read in a batch fails like a virsh command that found nothing (the batch goes on)
      const r = await this.exec([...prefix, ...cmd], opts).catch(() => ({ exitCode: 1, stdout: "", stderr: `error: unscripted in this test: ${cmd.join(" ")}\n` }));
      outs.push(r.stdout);
      stderr += r.stderr;
      if (r.exitCode !== 0) exitCode = r.exitCode;
    }
    return { exitCode, stdout: outs.join(parts.sep), stderr };
  }

  async writeFile(path: string, content: string, mode?: number): Promise<void> {
    this.calls.push({ kind: "write", path, content, mode });
    this.files.set(path, content);
  }

  async remove(path: string): Promise<void> {
    this.calls.push({ kind: "remove", path });
    this.files.delete(path);
  }

  /** From now on, files written through the Runner land on disk and removals really remove (the commands stay fake). */
  onDisk(): this {
    this.writeFile = async (path, content, mode) => {
      this.calls.push({ kind: "write", path, content, mode });
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, content);
    };
    this.remove = async (path) => {
      this.calls.push({ kind: "remove", path });
      rmSync(path, { recursive: true, force: true });
    };
    return this;
  }

  /**
   * The file tools `vm create` runs, acting on disk as the real ones do at the paths they are given (mkdir, install -d,
   * qemu-img create, ssh-keygen, genisoimage, chmod, mv -T), plus onDisk(). Later rules still win.
   */
  diskTools(o: { hostKey?: string; hostKeyPub?: string } = {}): this {
    const key = o.hostKey ?? "-----BEGIN OPENSSH PRIVATE KEY-----\nHOSTKEY\n-----END OPENSSH PRIVATE KEY-----\n";
    const pub = o.hostKeyPub ?? "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHostKey12 box\n";
    this.on(["mkdir"], (a) => { mkdirSync(a.at(-1)!, { recursive: !a.includes("-m") || a.includes("-p") }); return {}; });
    this.on(["install", "-d"], (a) => { mkdirSync(a.at(-1)!, { recursive: true }); return {}; });
    this.on(["qemu-img", "create"], (a) => { writeFileSync(a.at(-2)!, "qcow2"); return {}; });
    this.on(["ssh-keygen", "-q"], (a) => { const k = a[a.indexOf("-f") + 1]!; writeFileSync(k, key); writeFileSync(k + ".pub", pub); return {}; });
    this.on(["genisoimage"], (a) => { writeFileSync(a[a.indexOf("-output") + 1]!, "iso"); return {}; });
    this.on(["chmod"], (a) => { for (const p of a.slice(2)) chmodSync(p, parseInt(a[1]!, 8)); return {}; });
    this.on(["mv", "-T"], (a) => { renameSync(a[2]!, a[3]!); return {}; });
    return this.onDisk();
  }

  /** Commands starting with `prefix` run for real (recorded like the rest): for offline, harmless tools such as `ssh -G`. */
  real(prefix: string[]): this {
    return this.on(prefix, (argv) => {
      const r = Bun.spawnSync(argv, { stdin: "ignore" });
      return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
    });
  }

  /** argv of every exec, joined with spaces, in order */
  commands(): string[] {
    return this.calls.filter((c) => c.kind === "exec").map((c) => c.argv!.join(" "));
  }
}

/** The host tests see by default: the real files (tests work on temporary trees), but no usable /dev/kvm and no TCP. */
export function testHost(over: Partial<Host> = {}): Host {
  return hostWith({ env: { ...process.env }, openRw: () => "ENOENT", tcpOpen: async () => false, ...over });
}

/** `virsh -q -c URI "a x; echo SEP; b"` -> the separator and each command's words (virsh's own quoting undone). */
export function virshBatchParts(argv: string[]): { sep: string; cmds: string[][] } | null {
  if (argv[0] !== "virsh" || argv.length !== 5) return null;
  const m = / ; echo (AIVMSEP\w+) ; /.exec(argv[4]!);
  if (!m && !/^[a-z-]+( |$)/.test(argv[4]!)) return null;
  if (!m) return argv[4]!.includes(" ") ? { sep: "", cmds: [words(argv[4]!)] } : null;
  return { sep: m[1]!, cmds: argv[4]!.split(` ; echo ${m[1]} ; `).map(words) };
}

function words(s: string): string[] {
  const out: string[] = [];
  for (const m of s.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)) out.push(m[1] !== undefined ? m[1].replaceAll("'\\''", "'") : m[2]!);
  return out;
}

export function fakeRunner(opts: RunnerOptions = {}): { runner: Runner; fake: FakeBackend; printed: string[] } {
  const fake = new FakeBackend();
  const printed: string[] = [];
  const runner = new Runner(fake, { isRoot: true, interactive: false, yes: true, print: (t) => printed.push(t), host: testHost(), ...opts });
  return { runner, fake, printed };
}
