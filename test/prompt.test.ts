// Questions in a real terminal (tmux): Ctrl-C at any prompt is an interruption (exit 130, one line, nothing
// written); Ctrl-D is a "no" (never the default of a [Y/n] question); the VM pick list answers by number or name.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, ROOT } from "./helpers/cli.ts";
import { Tmux } from "./helpers/tmux.ts";

const TWO_VMS = '[[networks]]\nname = "n1"\nsubnet = "10.200.1.0/24"\n\n[[vms]]\nname = "box-a"\nnetwork = "n1"\n\n[[vms]]\nname = "box-b"\nnetwork = "n1"\n';

let t: Tmux | null = null;
afterEach(() => {
  t?.kill();
  t = null;
});

/** A shell in a terminal that runs one aivm command and prints its exit code; HOME and the store isolated. */
function terminal(args: string, store?: string): { home: string; config: string } {
  const home = mkdtempSync(join(tmpdir(), "aivm-prompt-"));
  const bin = join(home, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "aivm"), `#!/bin/sh\nexec ${BUN} ${join(ROOT, "bin/aivm.ts")} "$@"\n`, { mode: 0o755 });
  const config = join(home, "config.toml");
  if (store !== undefined) writeFileSync(config, store);
  t = new Tmux(["sh", "-c", `aivm ${args}; echo "rc=$?"; sleep 600`], {
    env: { HOME: home, PATH: `${bin}:/usr/bin:/bin`, TERM: "xterm", NO_COLOR: "1", AIVM_CONFIG: config, XDG_DATA_HOME: join(home, "data"), XDG_CACHE_HOME: join(home, "cache") },
    cwd: home,
  });
  return { home, config };
}

/** The lines after the question, up to rc=. */
function after(screen: string, question: RegExp): string[] {
  const lines = screen.split("\n");
  const i = lines.findIndex((l) => question.test(l));
  return lines.slice(i + 1).filter((l) => l.trim() && !/^rc=/.test(l));
}

describe.skipIf(!Bun.which("tmux"))("prompts in a real terminal", () => {
  test("config init review [Y/n]: Ctrl-C is exit 130 and one line; nothing written", async () => {
    const { config } = terminal("config init");
    await t!.waitFor(/Use these values\? \[Y\/n\]/, 30_000);
    t!.send("C-c");
    const s = await t!.waitFor(/^rc=\d+/m, 20_000);
    expect(s).toMatch(/^rc=130$/m);
    expect(after(s, /Use these values/)).toEqual(["aivm: interrupted"]);
    expect(existsSync(config)).toBe(false);
  }, 60_000);

  test("config init review [Y/n]: Ctrl-D is a no (not the default yes): exit 1, nothing written, no next question", async () => {
    const { config, home } = terminal("config init");
    await t!.waitFor(/Use these values\? \[Y\/n\]/, 30_000);
    t!.send("C-d");
    const s = await t!.waitFor(/^rc=\d+/m, 20_000);
    expect(s).toMatch(/^rc=1$/m);
    expect(s).toContain("aivm: config init: not accepted; nothing was written");
    expect(s).not.toContain("No SSH key found");
    expect(existsSync(config)).toBe(false);
    expect(existsSync(join(home, ".ssh"))).toBe(false);
  }, 60_000);

  test("a consent question [y/N]: Ctrl-D is a no, Ctrl-C is 130; the file is untouched", async () => {
    const store = TWO_VMS.replace("[[networks]]", `[defaults.paths]\nvm_root = "VMROOT"\n\n[[networks]]`);
    for (const [key, rc, line] of [["C-d", "1", /not approved/], ["C-c", "130", /^aivm: interrupted$/m]] as const) {
      const home = mkdtempSync(join(tmpdir(), "aivm-prompt-vms-"));
      mkdirSync(join(home, "box-a"), { recursive: true });
      writeFileSync(join(home, "box-a", "ip"), "10.200.1.50\n");
      const { home: h } = terminal("ssh-config upsert --vm box-a", store.replace("VMROOT", home));
      mkdirSync(join(h, ".ssh"));
      writeFileSync(join(h, ".ssh", "config"), "Host a\n");
      await t!.waitFor(/Write the aivm:box-a Host block .*\[y\/N\]/, 30_000);
      t!.send(key);
      const s = await t!.waitFor(/^rc=\d+/m, 20_000);
      expect(s).toMatch(new RegExp(`^rc=${rc}$`, "m"));
      expect(s).toMatch(line);
      expect(s).not.toContain("internal error");
      expect(readFileSync(join(h, ".ssh", "config"), "utf8")).toBe("Host a\n");
      t!.kill();
    }
  }, 90_000);

  test("which VM? a numbered pick list: a number picks; Ctrl-D cancels (exit 2); Ctrl-C is 130", async () => {
    terminal("ssh-config print", TWO_VMS);
    await t!.waitFor(/Number or name \(empty: cancel\):/, 30_000);
    expect(t!.screen()).toMatch(/1\) box-a\s*\n\s*2\) box-b/);
    t!.type("2");
    t!.send("Enter");
    let s = await t!.waitFor(/^rc=\d+/m, 20_000);
    expect(s).toMatch(/^rc=0$/m);
    expect(s).toContain("Host box-b");
    t!.kill();

    terminal("ssh-config print", TWO_VMS);
    await t!.waitFor(/Number or name/, 30_000);
    t!.send("C-d");
    s = await t!.waitFor(/^rc=\d+/m, 20_000);
    expect(s).toMatch(/^rc=2$/m);
    expect(s).toContain("no VM picked");
    t!.kill();

    terminal("ssh-config print", TWO_VMS);
    await t!.waitFor(/Number or name/, 30_000);
    t!.send("C-c");
    s = await t!.waitFor(/^rc=\d+/m, 20_000);
    expect(s).toMatch(/^rc=130$/m);
    expect(after(s, /Number or name/)).toEqual(["aivm: interrupted"]);
  }, 90_000);
});
