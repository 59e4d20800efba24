// A real terminal for tests: a program in a detached tmux session on a private server (-L), keys sent to it, the
// screen read back. Used where only a terminal shows the truth: shell completion on Tab, Ctrl-C and Ctrl-D at a prompt.
export class Tmux {
  readonly server = `aivm-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  readonly session = "t";

  constructor(argv: string[], o: { env?: Record<string, string>; cwd?: string; width?: number } = {}) {
    const envArgs = Object.entries(o.env ?? {}).flatMap(([k, v]) => [`${k}=${v}`]);
    const r = Bun.spawnSync(["tmux", "-L", this.server, "-f", "/dev/null", "new-session", "-d", "-s", this.session, "-x", String(o.width ?? 200), "-y", "50", ...(o.cwd ? ["-c", o.cwd] : []), "env", "-i", ...envArgs, ...argv]);
    if (r.exitCode !== 0) throw new Error(`tmux: ${r.stderr.toString()}`);
  }

  /** tmux send-keys: words are keys (Tab, Enter, C-c, C-d, C-u) unless literal. */
  send(...keys: string[]): void {
    Bun.spawnSync(["tmux", "-L", this.server, "send-keys", "-t", this.session, ...keys]);
  }

  type(text: string): void {
    Bun.spawnSync(["tmux", "-L", this.server, "send-keys", "-t", this.session, "-l", text]);
  }

  screen(): string {
    return Bun.spawnSync(["tmux", "-L", this.server, "capture-pane", "-p", "-t", this.session]).stdout.toString();
  }

  /** Wait until the screen matches (returns it), or throw with what the screen showed. */
  async waitFor(re: RegExp, ms = 15_000): Promise<string> {
    const t0 = Date.now();
    for (;;) {
      const s = this.screen();
      if (re.test(s)) return s;
      if (Date.now() - t0 > ms) throw new Error(`tmux: ${re} not on the screen after ${ms} ms:\n${s}`);
      await Bun.sleep(100);
    }
  }

  kill(): void {
    Bun.spawnSync(["tmux", "-L", this.server, "kill-server"]);
  }
}
