import { expect, test } from "bun:test";
import { join } from "node:path";
import { describeUp, type UpReport } from "../lib/up.ts";
import { aivm, BUN, isolatedEnv, ROOT } from "./helpers/cli.ts";

const report = (over: Partial<UpReport["changes"]> = {}, changed = true): UpReport => ({
  vm: "box", ip: "10.77.0.100", network: "aivm-net", changed,
  changes: { network: "created", firewall: "applied", image: "fetched", store: "recorded", vm: "created", state: "started", sshConfig: "written", ...over },
});

test("describeUp: a first run lists what it did; a second says nothing changed", () => {
  expect(describeUp(report())).toEqual([
    "network aivm-net: created",
    "firewall: applied",
    "image: fetched",
    "vm box: created, started",
    "ssh config: written",
    "config: recorded box",
    "ready: box at 10.77.0.100; connect with `ssh box` or `aivm vm ssh`",
  ]);
  const again = describeUp(report({ network: "unchanged", firewall: "unchanged", image: "cached", store: "unchanged", vm: "unchanged", state: "unchanged", sshConfig: "unchanged" }, false));
  expect(again.at(-1)).toBe("nothing changed: box is already up at 10.77.0.100");
});

test("a second `aivm up` while the first still runs fails at once, naming the holder, and changes nothing", async () => {
  const env = isolatedEnv();
  const lock = join(env.XDG_DATA_HOME!, "aivm", "vms", "box", ".lock");
  const holder = Bun.spawn([BUN, "-e", `const { acquireLock } = await import(${JSON.stringify(join(ROOT, "lib/lock.ts"))}); acquireLock(${JSON.stringify(lock)}); console.log("held"); await Bun.sleep(20000);`], { stdout: "pipe", env });
  const reader = (holder.stdout as ReadableStream<Uint8Array>).getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain("held");
  try {
    const r = await aivm(["up", "--vm", "box", "--yes"], { env });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`another aivm process (pid ${holder.pid}) holds`);
    expect(r.stdout).toBe("");
    // nothing recorded in the config store
    expect(await Bun.file(join(env.XDG_CONFIG_HOME!, "aivm", "config.toml")).exists()).toBe(false);
  } finally {
    holder.kill();
  }
});
