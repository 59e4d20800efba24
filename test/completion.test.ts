// Shell completion, proven by asking each shell: bash (the completion function, with COMP_WORDS as bash sets them),
// zsh (an interactive zsh in a real terminal, Tab pressed: bashcompinit is where `mapfile` used to fail), fish
// (`complete -C`). The values of a flag come from its argument definition (an enum's options, names from the store,
// files only for --config), never file names where a name or a word is expected.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { aivm, BUN, isolatedEnv, ROOT } from "./helpers/cli.ts";
import { Tmux } from "./helpers/tmux.ts";
import { root } from "../lib/cli/root.ts";
import { commandTree } from "../lib/command-tree.ts";
import { flagSources } from "../lib/completion.ts";

const STORE = '[[networks]]\nname = "lan-one"\n\n[[vms]]\nname = "box-a"\nnetwork = "lan-one"\n\n[[vms]]\nname = "box-b"\nnetwork = "lan-one"\n';

let env: Record<string, string>;
let bin = "";
let scripts: Record<string, string> = {};

beforeAll(async () => {
  env = isolatedEnv();
  writeFileSync(join(env.HOME!, "c.toml"), STORE);
  env.AIVM_CONFIG = join(env.HOME!, "c.toml");
  bin = join(env.HOME!, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "aivm"), `#!/bin/sh\nexec ${BUN} ${join(ROOT, "bin/aivm.ts")} "$@"\n`, { mode: 0o755 });
  env.PATH = `${bin}:${env.PATH}`;
  // a file in the working directory that must never be offered where a name or word is expected
  writeFileSync(join(env.HOME!, "zz-not-a-vm.txt"), "");
  for (const shell of ["bash", "zsh", "fish"]) {
    const r = await aivm(["completion", shell], { env });
    expect(r.exitCode).toBe(0);
    scripts[shell] = join(env.HOME!, `aivm.${shell}`);
    writeFileSync(scripts[shell]!, r.stdout);
  }
});

describe("value sources come from the argument definitions", () => {
  test("enums give their options, --vm the store's VMs, --config files; other value flags nothing; the root's flags too", async () => {
    const nodes = await commandTree(root);
    const { global, perPath } = flagSources(nodes);
    expect(global.get("--vm")).toBe("list:vms");
    expect(global.get("--config")).toBe("files");
    expect(global.get("--mode")).toBe("words:shared-root shared git");
    expect(global.get("--access")).toBe("words:rw ro");
    expect(global.get("--section")).toBe("words:vms networks attachments");
    expect(global.get("--part")).toBe("words:user-data meta-data network-config");
    expect(global.get("--restart")).toBe("words:auto always never");
    for (const f of ["--guest-dst", "--shell", "--timeout", "--image-url"]) expect(global.get(f)).toBe("none");
    expect(perPath.size).toBe(0);
    expect(nodes.find((n) => n.path === "")!.flags.map((f) => f.flag)).toEqual(["--config", "--verbose", "--quiet", "--vm", "--help"]);
    const net = nodes.find((n) => n.path === "net create")!;
    expect(net.positional?.source).toEqual({ kind: "list", what: "networks" });
    expect(nodes.find((n) => n.path === "attach")!.positional?.source).toEqual({ kind: "dirs" });
  });
});

describe("bash", () => {
  const complete = (words: string[]) => {
    const arr = words.map((w) => `'${w}'`).join(" ");
    const p = Bun.spawnSync(["bash", "-c", `source '${scripts.bash}'; COMP_WORDS=(aivm ${arr}); COMP_CWORD=${words.length}; _aivm; printf '%s\\n' "\${COMPREPLY[@]}"`], { env, cwd: env.HOME });
    expect(p.stderr.toString()).toBe("");
    return p.stdout.toString().trim().split("\n").filter(Boolean).sort();
  };

  test("subcommands, flags, names from the store, enum values; the new commands too", () => {
    expect(complete(["v"])).toEqual(["vm"]);
    expect(complete(["vm", "c"])).toEqual(["cloud-init", "console-log", "create"]);
    expect(complete(["--verbose", "vm", "u"])).toEqual(["up", "update"]);
    expect(complete(["vm", "up", "--d"])).toEqual(["--dry-run"]);
    expect(complete(["vm", "up", "--vm", "box"])).toEqual(["box-a", "box-b"]);
    expect(complete(["net", "create", ""])).toEqual(["lan-one"]);
    expect(complete(["completion", ""])).toEqual(["bash", "fish", "zsh"]);
    expect(complete(["vm", "cloud-init", "--part", "m"])).toEqual(["meta-data"]);
    expect(complete(["a"])).toEqual(["attach"]);
    expect(complete(["d"])).toEqual(["detach", "doctor"]);
    expect(complete(["help", ""])).toEqual(["plan", "raw", "tree"]);
    expect(complete(["list", "--section", ""])).toEqual(["attachments", "networks", "vms"]);
    expect(complete(["attach", "--mode", "s"])).toEqual(["shared", "shared-root"]);
    expect(complete(["share", "attach", "--access", ""])).toEqual(["ro", "rw"]);
    expect(complete(["vm", "update", "--restart", ""])).toEqual(["always", "auto", "never"]);
    expect(complete(["ssh", "--sh"])).toEqual(["--shell"]);
  }, 60_000);

  test("a flag's value is not a command word; no file names where a name is expected", () => {
    // `--vm vm` must not make `vm` the command path
    expect(complete(["--vm", "vm", "vm", "u"])).toEqual(["up", "update"]);
    expect(complete(["vm", "up", "--vm", "zz"])).toEqual([]);
    expect(complete(["attach", "--guest-dst", ""])).toEqual([]);
    expect(complete(["ssh", "--shell", ""])).toEqual([]);
    expect(complete(["--config", "zz"])).toEqual(["zz-not-a-vm.txt"]);
  }, 60_000);
});

describe.skipIf(!Bun.which("zsh") || !Bun.which("tmux"))("zsh (interactive, in a real terminal, Tab pressed)", () => {
  let t: Tmux;
  beforeAll(async () => {
    t = new Tmux(["zsh", "-f"], { env: { HOME: env.HOME!, PATH: env.PATH!, AIVM_CONFIG: env.AIVM_CONFIG!, TERM: "xterm", PS1: "%% " }, cwd: env.HOME });
    await t.waitFor(/%/);
    t.type(`source ${scripts.zsh}; echo loaded`);
    t.send("Enter");
    await t.waitFor(/^loaded$/m);
    t.send("C-l");
  }, 30_000);
  afterAll(() => t?.kill());

  /** Type a line, press Tab, read the screen; then clear the line. */
  async function tab(line: string, expect_: RegExp): Promise<string> {
    t.send("C-l");
    await Bun.sleep(200);
    t.type(line);
    t.send("Tab");
    try {
      return await t.waitFor(expect_, 20_000);
    } finally {
      t.send("C-c");
      await Bun.sleep(300);
    }
  }

  test("a unique completion is inserted; several are listed; no `command not found`", async () => {
    expect(await tab("aivm vm cl", /aivm vm cloud-init/)).not.toMatch(/command not found|mapfile/);
    const s = await tab("aivm vm c", /cloud-init\s+console-log\s+create/);
    expect(s).not.toMatch(/command not found/);
    await tab("aivm hel", /aivm help$/m);
    await tab("aivm help ", /plan\s+raw\s+tree/);
  }, 90_000);

  test("flag values: the store's VMs, enum words, network names", async () => {
    await tab("aivm vm up --vm box-", /box-a\s+box-b/);
    await tab("aivm list --section ", /attachments\s+networks\s+vms/);
    expect(await tab("aivm attach --mode sh", /aivm attach --mode shared/)).not.toContain("zz-not-a-vm");
    await tab("aivm net create ", /aivm net create lan-one/);
  }, 90_000);
});

describe.skipIf(!Bun.which("fish"))("fish (complete -C)", () => {
  const complete = (line: string) => {
    const p = Bun.spawnSync(["fish", "--no-config", "-c", `source '${scripts.fish}'; complete -C '${line}'`], { env, cwd: env.HOME });
    expect(p.stderr.toString()).toBe("");
    return p.stdout.toString().trim().split("\n").filter(Boolean).map((l) => l.split("\t")[0]!).sort();
  };

  test("subcommands and the new commands", () => {
    expect(complete("aivm vm cl")).toEqual(["cloud-init"]);
    expect(complete("aivm completion ")).toEqual(["bash", "fish", "zsh"]);
    expect(complete("aivm help ")).toEqual(["plan", "raw", "tree"]);
    expect(complete("aivm a")).toEqual(["attach"]);
  }, 60_000);

  test("value flags: names and words only, never file names; --config: files", () => {
    expect(complete("aivm vm up --vm ")).toEqual(["box-a", "box-b"]);
    expect(complete("aivm attach --mode ")).toEqual(["git", "shared", "shared-root"]);
    expect(complete("aivm list --section ")).toEqual(["attachments", "networks", "vms"]);
    expect(complete("aivm vm update --restart ")).toEqual(["always", "auto", "never"]);
    expect(complete("aivm attach --guest-dst ")).toEqual([]);
    expect(complete("aivm ssh --shell ")).toEqual([]);
    expect(complete("aivm net create ")).toEqual(["lan-one"]);
    expect(complete("aivm --vm box-a vm u")).toEqual(["up", "update"]);
    expect(complete("aivm --config zz")).toEqual(["zz-not-a-vm.txt"]);
  }, 60_000);
});

test("an unknown shell is a usage error", async () => {
  expect((await aivm(["completion", "tcsh"])).exitCode).toBe(2);
});
