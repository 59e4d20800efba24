// Real-VM checks for `aivm status`, `aivm doctor` and `aivm vm update` (issue 5), in their own lab like lifecycle.test.ts:
// a private netns with its own libvirtd, the compiled dist/aivm, the Debian guest built by `aivm image build --debootstrap`.
// Opt-in with AIVM_E2E=1; serialize with the other suites: flock /var/tmp/aivm-e2e.lock.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  isolatedEnv, uniqueNamesConfig, added, alive, BIN, BUN, ensureDir, inNs, inventory, must, preflight, priv, ROOT, setTomlKey, setTranscript, sh,
  startLab, stopLab, Transcript, URI, type Inventory, type Lab, type Out,
} from "./harness.ts";
import { binaryRunner, orderedSteps } from "./steps.ts";

const ENABLED = process.env.AIVM_E2E === "1";
const CI = process.env.CI === "true";
const CACHE_HOME = process.env.AIVM_E2E_CACHE || "/var/tmp/aivm-e2e-cache";
const missing = ENABLED ? preflight() : [];
const runIt = ENABLED && missing.length === 0;
if (!ENABLED) console.error("e2e status: skipped (set AIVM_E2E=1, or run `make e2e`)");
else if (missing.length && !CI) console.error(`e2e status: skipped: missing ${missing.join(", ")}`);
if (ENABLED && missing.length && CI) {
  test("e2e status preflight", () => {
    throw new Error(`e2e: missing ${missing.join(", ")} (CI=true: the suite may not skip)`);
  });
}

const tag = Math.random().toString(16).slice(2, 8);
const names = { vm: `e2e-st-${tag}`, net: `e2e-stnet-${tag}` };
const figures: Record<string, string> = {};
let runDir = "";
let env: Record<string, string> = {};
let lab: Lab | null = null;
let baseline: Inventory | null = null;
let configFile = "";
let vmDir = "";
let tornDown = false;

const { step, state } = orderedSteps();
/** dist/aivm in the lab with the isolated HOME/XDG environment */
const { run: aivm, ok: aivmOk } = binaryRunner((args) => inNs(lab!, [BIN, ...args], env));



const guest = (cmd: string) => aivm(["vm", "ssh", "--vm", names.vm, "--shell", cmd], { timeoutMs: 120_000 });

interface Layer { name: string; ok: boolean | null; detail: string; reason?: string; next?: string }
interface Report { vm: string | null; ok: boolean; layers: Layer[]; next: string[] }

async function status(): Promise<Report> {
  const r = await aivmOk(["status", "--json"], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout) as Report;
}
const layer = (r: Report, name: string) => r.layers.find((l) => l.name === name)!;
const notTrue = (r: Report) => r.layers.filter((l) => l.ok !== true).map((l) => `${l.name}=${l.ok}: ${l.detail}${l.reason ? ` (${l.reason})` : ""}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

describe.skipIf(!runIt)("aivm status / doctor / vm update on a real guest", () => {
  step("environment: storage under /var/tmp with mode 0755", async () => {
    if (!existsSync(BIN)) await must([BUN, "run", "build"], { live: true });
    runDir = mkdtempSync("/var/tmp/aivm-e2e-status-");
    chmodSync(runDir, 0o755);
    setTranscript(new Transcript(join(runDir, "transcript.log")));
    env = await isolatedEnv(runDir, CACHE_HOME);
    configFile = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
  });

  step("image build --debootstrap (cached by recipe)", async () => {
    const r = await sh([BIN, "image", "build", "--debootstrap"], { env, timeoutMs: 30 * 60_000, live: true });
    if (r.code !== 0) throw new Error(`image build exited ${r.code}: ${r.stderr.trim().split("\n").slice(-5).join(" | ")}`);
    env.AIVM_E2E_IMAGE = r.stdout.trim();
    env.AIVM_E2E_SHA = basename(env.AIVM_E2E_IMAGE, ".img");
  });

  step("private netns with its own libvirtd", async () => {
    lab = await startLab(runDir, `st${tag}`);
    baseline = await inventory(lab);
  }, 120_000);

  step("config init --defaults, unique names", async () => {
    await aivmOk(["config", "init", "--defaults", "--yes", "--image-url", `file://${env.AIVM_E2E_IMAGE}`, "--image-sha256", env.AIVM_E2E_SHA!]);
    writeFileSync(configFile, uniqueNamesConfig(readFileSync(configFile, "utf8"), names, CACHE_HOME));
    vmDir = join(env.XDG_DATA_HOME!, "aivm", "vms", names.vm);
  });

  step("before up: status exits 0, names what to run first, shows nothing as false that it could not check", async () => {
    const r = await status();
    expect(r.vm).toBeNull();
    expect(layer(r, "network").ok).toBe(false);
    expect(r.next).toContain("aivm up");
    for (const n of ["ip", "ssh", "cloud-init", "drift"]) expect(layer(r, n).ok).toBeNull();
  });

  step("doctor exits 0 in the test environment", async () => {
    const r = await aivm(["doctor"]);
    if (r.code !== 0) throw new Error(`doctor exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).not.toContain("FAIL");
  });

  step("up --yes", async () => {
    const r = await aivmOk(["up", "--yes"], { timeoutMs: 20 * 60_000, live: true });
    figures["aivm up"] = secs(r.ms);
  }, 25 * 60_000);

  step("after up: status --json reports every layer true, exit 0", async () => {
    const t0 = Date.now();
    const r = await status();
    figures["aivm status --json"] = secs(Date.now() - t0);
    expect(notTrue(r)).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.next).toEqual([]);
    expect(r.layers.map((l) => l.name)).toEqual(["host-dependencies", "acceleration", "libvirtd", "network", "firewall", "image", "vm", "ip", "ssh", "cloud-init", "attachments", "drift"]);
    const d = await aivmOk(["status", "--detail", "--json"], { timeoutMs: 300_000 });
    expect(layer(JSON.parse(d.stdout), "image").detail).toContain("sha256 verified");
  });

  step("after fw remove: the firewall is false and status names `aivm fw apply`", async () => {
    await aivmOk(["fw", "remove", names.net, "--yes"]);
    const r = await status();
    expect(layer(r, "firewall")).toMatchObject({ ok: false });
    expect(r.ok).toBe(false);
    expect(r.next.some((n) => n.startsWith("aivm fw apply"))).toBe(true);
    const text = await aivmOk(["status"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^firewall\s+false\s/m);
    expect(text.stdout).toContain("aivm fw apply");
    await aivmOk(["fw", "apply", names.net, "--yes"]);
    expect(layer(await status(), "firewall").ok).toBe(true);
  });

  step("vm update grows the disk of the running guest; the guest sees the new size", async () => {
    const before = Number((await guest("cat /sys/block/vda/size")).stdout.trim()) * 512;
    const dfBefore = Number((await guest("df -B1 --output=size / | tail -n1")).stdout.trim());
    const gib = Math.round(before / 1024 ** 3) + 1;
    writeFileSync(configFile, setTomlKey(readFileSync(configFile, "utf8"), "defaults.vm", "disk_gib", String(gib)));
    const drift = layer(await status(), "drift");
    expect(drift.ok).toBe(false);
    expect(drift.next).toContain("aivm vm update");
    const dry = await aivmOk(["vm", "update", "--dry-run", "--yes"]);
    expect(dry.stdout).toContain("blockresize");
    const r = await aivmOk(["vm", "update", "--yes"]);
    expect(r.stderr).toContain(`disk: ${Math.round(before / 1024 ** 3)} GiB -> ${gib} GiB`);
    const after = Number((await guest("cat /sys/block/vda/size")).stdout.trim()) * 512;
    expect(after).toBe(gib * 1024 ** 3);
    const df = await guest("df -B1 --output=size / | tail -n1");
    figures["guest / after grow"] = `${(Number(df.stdout.trim()) / 1024 ** 3).toFixed(2)} GiB (block device ${gib} GiB)`;
    expect(r.stderr).toContain("grown");
    expect(Number(df.stdout.trim())).toBeGreaterThan(dfBefore + 0.5 * 1024 ** 3);
    expect(notTrue(await status())).toEqual([]);
  });

  step("vm update --restart never: vCPUs go into the definition, status says a restart is pending", async () => {
    const show = JSON.parse((await aivmOk(["config", "show", "--json"])).stdout);
    const cpus: number = show.vms.find((v: { name: string }) => v.name === names.vm).cpus;
    writeFileSync(configFile, setTomlKey(readFileSync(configFile, "utf8"), "defaults.vm", "cpus", String(cpus + 1)));
    const r = await aivmOk(["vm", "update", "--yes", "--restart", "never"]);
    expect(r.stderr).toContain(`cpus: ${cpus} -> ${cpus + 1} (restart needed)`);
    expect(r.stderr).toContain("restart is pending");
    const drift = layer(await status(), "drift");
    expect(drift.ok).toBe(false);
    expect(drift.detail).toContain("next restart");
    expect(drift.next).toBe("aivm vm restart");
    // back to the running value: nothing pending any more
    writeFileSync(configFile, setTomlKey(readFileSync(configFile, "utf8"), "defaults.vm", "cpus", String(cpus)));
    await aivmOk(["vm", "update", "--yes", "--restart", "never"]);
    expect(notTrue(await status())).toEqual([]);
  });

  step("vm update refuses to shrink the disk (exit 2, nothing changed)", async () => {
    writeFileSync(configFile, setTomlKey(readFileSync(configFile, "utf8"), "defaults.vm", "disk_gib", "1"));
    const r = await aivm(["vm", "update", "--yes"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("never shrinks");
  });

  step("vm delete, fw remove, net destroy", async () => {
    try { cpSync(join(vmDir, "console.log"), join(runDir, "console.log")); } catch {}
    await aivmOk(["vm", "delete", "--vm", names.vm, "--yes"], { timeoutMs: 5 * 60_000 });
    await aivmOk(["fw", "remove", names.net, "--yes"]);
    await aivmOk(["net", "destroy", names.net, "--yes"]);
  });

  test("nothing is left behind", async () => {
    if (!runDir) return;
    const problems = await teardown();
    expect(problems).toEqual([]);
  }, 5 * 60_000);

  afterAll(async () => {
    if (runDir && !tornDown) await teardown().catch((e) => console.error(`e2e status: teardown: ${e}`));
    console.error(`e2e status figures:\n${Object.entries(figures).map(([k, v]) => `  ${k}: ${v}`).join("\n")}`);
  });
});

async function teardown(): Promise<string[]> {
  const problems: string[] = [];
  if (lab && baseline) {
    const extra = added(baseline, await inventory(lab));
    for (const [k, v] of Object.entries(extra)) problems.push(`${k} left: ${v!.join(", ")}`);
    if (extra.domains?.length) {
      await sh(priv(["virsh", "-q", "-c", URI, "destroy", names.vm]));
      await sh(priv(["virsh", "-q", "-c", URI, "undefine", names.vm, "--nvram"]));
    }
    for (const n of extra.networks ?? []) {
      await sh(priv(["virsh", "-q", "-c", URI, "net-destroy", n]));
      await sh(priv(["virsh", "-q", "-c", URI, "net-undefine", n]));
    }
    for (const t of extra.nftTables ?? []) await sh(inNs(lab, ["nft", "delete", ...t.replace(/^table\s+/, "").split(/\s+/)]));
  }
  if (vmDir && existsSync(vmDir)) {
    problems.push(`VM directory left: ${vmDir}`);
    await sh(priv(["rm", "-rf", vmDir]));
  }
  if (lab) {
    const pids = { ...lab.pids };
    problems.push(...(await stopLab(lab)));
    for (const [what, pid] of Object.entries(pids)) if (alive(pid)) problems.push(`${what} (pid ${pid}) still running`);
    lab = null;
  }
  if (state.failed || problems.length) {
    const dest = ensureDir(join(ROOT, "e2e", "artifacts", basename(runDir)));
    for (const f of ["transcript.log", "console.log", "libvirtd.log"]) try { cpSync(join(runDir, f), join(dest, f)); } catch {}
    try { cpSync(configFile, join(dest, "config.toml")); } catch {}
    console.error(`e2e status: artifacts kept in ${dest}`);
  } else rmSync(runDir, { recursive: true, force: true });
  tornDown = true;
  return problems;
}
