// The Runner: the only code that starts programs, asks the user, or touches the host (it carries the Host seam).
// Planners build argv arrays and Steps; the Runner prints them (--dry-run), asks for consent, adds sudo when not root,
// runs them through a Backend: zx for what changes things, a direct spawn (no zx, no shell) for short reads, a
// recorder in tests. Every running child and every registered cleanup is undone when aivm is interrupted.
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { AivmError, EXIT, lastLine, UsageError } from "./errors.ts";
import { writeFileAtomicSync } from "./fsutil.ts";
import { realHost, type Host } from "./host.ts";
import { canPrompt, log, out } from "./log.ts";
import { ask } from "./prompt.ts";
import { describeAction, Step, summarize } from "./steps.ts";
import { shellJoin } from "./shell.ts";

export interface Result {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  /** needs root: prefixed with sudo when we are not root */
  privileged?: boolean;
  /** exit codes that count as success (default [0]); others throw AivmError */
  okCodes?: number[];
  /** do not throw on any exit code */
  nothrow?: boolean;
  /** connect the child to our terminal (ssh sessions, editors) */
  inherit?: boolean;
  timeoutMs?: number;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** what failed, for the error line (default: the program name) */
  what?: string;
  /** a read: run directly (no zx, no shell) */
  read?: boolean;
}

/** Where commands really go. `exec` gets reads too (opts.read). */
export interface Backend {
  exec(argv: string[], opts: ExecOptions): Promise<Result>;
  writeFile(path: string, content: string, mode?: number): Promise<void>;
  remove(path: string): Promise<void>;
}

export interface RunnerOptions {
  dryRun?: boolean;
  yes?: boolean;
  isRoot?: boolean;
  interactive?: boolean;
  /** where --dry-run output goes (default stdout) */
  print?: (text: string) => void;
  /** how to ask (default: a line on stderr, answer from stdin); null: end of input (Ctrl-D) */
  ask?: (question: string) => Promise<string | null>;
  /** what the host looks like (default: this machine) */
  host?: Host;
}

const cleanups = new Set<() => void>();

/** Register something to undo if aivm is interrupted (a child to kill, a partial file to remove). Returns the unregister. */
export function onInterrupt(fn: () => void): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Undo everything registered, newest first (bin/aivm.ts calls this on SIGINT/SIGTERM before exiting). */
export function runInterruptCleanups(): void {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {}
  }
}

export class Runner {
  readonly dryRun: boolean;
  readonly yes: boolean;
  readonly isRoot: boolean;
  readonly host: Host;
  /** both ends are a terminal: questions may be asked */
  readonly interactive: boolean;
  private approvedAll = false;
  /** where --dry-run output goes */
  readonly print: (text: string) => void;
  private readonly askFn: (q: string) => Promise<string | null>;

  constructor(
    readonly backend: Backend,
    opts: RunnerOptions = {},
  ) {
    this.dryRun = !!opts.dryRun;
    this.yes = !!opts.yes;
    this.isRoot = opts.isRoot ?? process.getuid?.() === 0;
    this.interactive = opts.interactive ?? canPrompt();
    this.print = opts.print ?? out;
    this.askFn = opts.ask ?? ask;
    this.host = opts.host ?? realHost;
  }

  private sudo(argv: string[], privileged?: boolean): string[] {
    if (!privileged || this.isRoot) return argv;
    return this.interactive ? ["sudo", ...argv] : ["sudo", "-n", ...argv];
  }

  /** Run a command that only reads state (directly: no zx, no shell). Runs under --dry-run too. */
  async read(argv: string[], opts: ExecOptions = {}): Promise<Result> {
    return this.invoke(argv, { ...opts, read: true });
  }

  /** Run a command that changes something. Under --dry-run it is printed and not run. */
  async exec(argv: string[], opts: ExecOptions = {}): Promise<Result> {
    if (this.dryRun) {
      this.print(describeAction({ kind: "run", argv, input: opts.input, privileged: opts.privileged }, !this.isRoot));
      return { exitCode: 0, stdout: "", stderr: "" };
    }
    return this.invoke(argv, opts);
  }

  /** Write a file atomically. Under --dry-run it is printed and not written. */
  async writeFile(path: string, content: string, mode?: number): Promise<void> {
    if (this.dryRun) {
      // the real write makes missing parent directories (fsutil.ts): so does the printed text, to run as pasted
      if (!this.host.exists(dirname(path))) this.print(shellJoin(["mkdir", "-p", dirname(path)]));
      this.print(describeAction({ kind: "write", path, content, mode }));
      return;
    }
    log.debug(`write ${path}`);
    await this.backend.writeFile(path, content, mode);
  }

  async remove(path: string): Promise<void> {
    if (this.dryRun) {
      this.print(describeAction({ kind: "remove", path }));
      return;
    }
    log.debug(`remove ${path}`);
    await this.backend.remove(path);
  }

  /**
   * Ask the user one question and return the answer (trimmed). Every question aivm asks goes through here: without a
   * terminal it refuses (exit 2, naming the flag that answers it); Ctrl-C is exit 130; Ctrl-D (end of input) is a
   * "no": the answer `o.eof` (default "no"), never the default of a [Y/n] question.
   */
  async ask(what: string, question: string, hint = "re-run with --yes", o: { eof?: string } = {}): Promise<string> {
    if (!this.interactive) throw new UsageError(what, "needs an answer, but there is no terminal to ask on", hint);
    const a = await this.askFn(question);
    return a === null ? (o.eof ?? "no") : a.trim();
  }

  /** Ask a yes/no question (consent for a change), honouring --yes and refusing without a terminal. */
  async confirm(what: string, question: string): Promise<boolean> {
    if (this.yes || this.approvedAll) return true;
    if (!this.interactive) {
      throw new UsageError(what, "needs your approval, but there is no terminal to ask on", "re-run with --yes");
    }
    const a = ((await this.askFn(`${question} [y/N] `)) ?? "no").trim().toLowerCase();
    return a === "y" || a === "yes";
  }

  /** Preview a step, ask for approval when it needs consent, then run its actions in order. */
  async step(step: Step): Promise<void> {
    if (step.actions.length === 0) return;
    if (this.dryRun) {
      this.print(`# step: ${step.title} (${step.why})`);
      for (const a of step.actions) this.print(describeAction(a, !this.isRoot));
      return;
    }
    const preview = [`Step: ${step.title}`, `  Why: ${step.why}`, ...step.actions.map((a, i) => `  ${i + 1}. ${summarize(a, !this.isRoot)}`)];
    if (step.consent && !this.yes && !this.approvedAll) {
      if (!this.interactive) {
        throw new UsageError(step.title, "needs your approval, but there is no terminal to ask on", "re-run with --yes");
      }
      log.info(preview.join("\n"));
      for (;;) {
        const a = ((await this.askFn("Approve this step? [y]es/[a]ll/[s]how/[N]o ")) ?? "no").trim().toLowerCase();
        if (a === "s" || a === "show") {
          for (const act of step.actions) process.stderr.write(describeAction(act, !this.isRoot) + "\n");
          continue;
        }
        if (a === "a" || a === "all") this.approvedAll = true;
        else if (a !== "y" && a !== "yes") throw new AivmError(step.title, "not approved", EXIT.FAILED);
        break;
      }
    } else {
      log.debug(preview.join("\n"));
    }
    log.info(step.title);
    for (const a of step.actions) {
      if (a.kind === "run") await this.invoke(a.argv, { input: a.input, privileged: a.privileged, okCodes: a.okCodes, what: step.title });
      else if (a.kind === "write") await this.backend.writeFile(a.path, a.content, a.mode);
      else await this.backend.remove(a.path);
    }
  }

  private async invoke(argv: string[], opts: ExecOptions): Promise<Result> {
    const full = this.sudo(argv, opts.privileged);
    log.debug(`$ ${shellJoin(full)}`);
    const r = await this.backend.exec(full, opts);
    const ok = opts.nothrow || (opts.okCodes ?? [0]).includes(r.exitCode);
    if (!ok) {
      const why = r.exitCode === 127 && /command not found|No such file/.test(r.stderr) ? `${argv[0]}: command not found (is it installed? \`aivm doctor\` checks the host)` : `\`${shellJoin(argv).slice(0, 160)}\` exited ${r.exitCode}${lastLine(r.stderr) ? `: ${lastLine(r.stderr)}` : ""}`;
      throw new AivmError(opts.what ?? argv[0]!, why, EXIT.FAILED);
    }
    return r;
  }
}

/** The real backend: zx (loaded lazily, it costs startup time) for what changes things, Bun.spawn for reads. */
export class ZxBackend implements Backend {
  async exec(argv: string[], opts: ExecOptions): Promise<Result> {
    if (!opts.inherit && (opts.read || opts.input !== undefined)) return spawnDirect(argv, opts);
    const { $ } = await import("zx");
    const p = $({
      quiet: true,
      nothrow: true,
      input: opts.input,
      cwd: opts.cwd,
      env: opts.env ? ({ ...process.env, ...opts.env } as NodeJS.ProcessEnv) : process.env,
      stdio: opts.inherit ? "inherit" : undefined,
      timeout: opts.timeoutMs ? `${opts.timeoutMs}ms` : undefined,
    } as Parameters<typeof $>[0])`${argv}`;
    const off = onInterrupt(() => void p.kill("SIGTERM").catch(() => {}));
    try {
      const o = await p;
      return { exitCode: o.exitCode ?? (o.signal ? 128 + 15 : 1), stdout: o.stdout, stderr: o.stderr };
    } finally {
      off();
    }
  }

  async writeFile(path: string, content: string, mode?: number): Promise<void> {
    writeFileAtomicSync(path, content, mode);
  }

  async remove(path: string): Promise<void> {
    rmSync(path, { recursive: true, force: true });
  }
}

/**
 * A child started directly: no zx, no shell (reads are short and many). Bun's child_process (under zx) also hands
 * the child a socket as stdin, which `/dev/stdin` cannot open (ENXIO), so `virsh define /dev/stdin` failed; a Blob
 * gives a memfd, which any reader can open.
 */
async function spawnDirect(argv: string[], opts: ExecOptions): Promise<Result> {
  let p: ReturnType<typeof Bun.spawn>;
  try {
    p = Bun.spawn(argv, {
      stdin: opts.input !== undefined ? new Blob([opts.input]) : "ignore",
      stdout: "pipe",
      stderr: "pipe",
      cwd: opts.cwd,
      env: (opts.env ? { ...process.env, ...opts.env } : process.env) as Record<string, string>,
      ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { exitCode: 127, stdout: "", stderr: `${argv[0]}: command not found` };
    throw e;
  }
  const off = onInterrupt(() => p.kill("SIGTERM"));
  try {
    const [stdout, stderr, exitCode] = await Promise.all([
      new Response(p.stdout as ReadableStream).text(),
      new Response(p.stderr as ReadableStream).text(),
      p.exited,
    ]);
    return { exitCode: p.signalCode ? 128 + 15 : exitCode, stdout, stderr };
  } finally {
    off();
  }
}

export function realRunner(opts: RunnerOptions = {}): Runner {
  return new Runner(new ZxBackend(), opts);
}
