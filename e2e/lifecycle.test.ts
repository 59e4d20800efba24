// The hermetic real-VM suite (`make e2e`): the compiled dist/aivm against a real libvirtd in a private network
// namespace and a real Debian guest built with `aivm image build --debootstrap`.
// Opt-in with AIVM_E2E=1. A host without the tools skips with one line; under CI=true it fails instead.
// AIVM_E2E_KEEP=1 leaves the VM, the daemons and the namespaces running for debugging (and says how to clean up).
// AIVM_E2E_CACHE (default /var/tmp/aivm-e2e-cache) is the XDG cache home reused across runs (the built image).
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  isolatedEnv, uniqueNamesConfig, addLan, added, alive, BIN, BUN, ensureDir, inNs, inventory, LAN, listen, must, preflight, priv, probeCommand,
  ROOT, setTomlKey, setTranscript, sh, startLab, stopLab, TOKEN, Transcript, URI,
  type Inventory, type Lab, type Listener, type Out,
} from "./harness.ts";
import { binaryRunner, orderedSteps } from "./steps.ts";

const ENABLED = process.env.AIVM_E2E === "1";
const CI = process.env.CI === "true";
const KEEP = process.env.AIVM_E2E_KEEP === "1";
const CACHE_HOME = process.env.AIVM_E2E_CACHE || "/var/tmp/aivm-e2e-cache";

const missing = ENABLED ? preflight() : [];
const runIt = ENABLED && missing.length === 0;
if (!ENABLED) console.error("e2e: skipped (set AIVM_E2E=1, or run `make e2e`)");
else if (missing.length && !CI) console.error(`e2e: skipped: missing ${missing.join(", ")}`);

if (ENABLED && missing.length && CI) {
  test("e2e preflight", () => {
    throw new Error(`e2e: missing ${missing.join(", ")} (CI=true: the suite may not skip)`);
  });
}

// ---------- state shared by the steps ----------

const tag = Math.random().toString(16).slice(2, 8);
const names = { vm: `e2e-vm-${tag}`, net: `e2e-net-${tag}` };
const PORT = { denied: 18081, allowed: 18082, lan: 18083 };
const figures: Record<string, string> = {};
const t0 = Date.now();
let runDir = "";
let env: Record<string, string> = {};
let lab: Lab | null = null;
let baseline: Inventory | null = null;
let gateway = "";
let subnetPrefix = "";
let vmDir = "";
let configFile = "";
const listeners: Listener[] = [];
let tornDown = false;

const { step, state } = orderedSteps();
/** dist/aivm in the lab with the isolated HOME/XDG environment */
const { run: aivm, ok: aivmOk } = binaryRunner((args) => inNs(lab!, [BIN, ...args], env));



/** A command in the guest through `aivm vm ssh`. */
const guest = (cmd: string, timeoutMs = 120_000) => aivm(["vm", "ssh", "--vm", names.vm, "--shell", cmd], { timeoutMs });

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

describe.skipIf(!runIt)("aivm e2e: a real guest on a real libvirtd in a private netns", () => {
  step("dist/aivm is built", async () => {
    if (!existsSync(BIN)) await must([BUN, "run", "build"], { live: true });
    expect(existsSync(BIN)).toBe(true);
    runDir = mkdtempSync("/var/tmp/aivm-e2e-run-");
    chmodSync(runDir, 0o755); // libvirt's qemu user must traverse to the VM directory
    setTranscript(new Transcript(join(runDir, "transcript.log")));
    env = await isolatedEnv(runDir, CACHE_HOME);
    configFile = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
  });

  step("image build --debootstrap (cached by recipe across runs)", async () => {
    // outside the namespace: debootstrap needs the host's mirror
    const r = await sh([BIN, "image", "build", "--debootstrap"], { env, timeoutMs: 30 * 60_000, live: true });
    if (r.code !== 0) throw new Error(`image build exited ${r.code}: ${r.stderr.trim().split("\n").slice(-5).join(" | ")}`);
    figures["image build"] = `${secs(r.ms)}${/already built/.test(r.stderr) ? " (cached)" : ""}`;
    const path = r.stdout.trim();
    expect(path).toMatch(/\/[0-9a-f]{64}\.img$/);
    const sha = basename(path, ".img");
    const manifest = JSON.parse(readFileSync(path.replace(/\.img$/, ".json"), "utf8"));
    expect(manifest).toMatchObject({ sha256: sha, format: "qcow2", source: "debootstrap:bookworm", cmdline: "root=/dev/vda rw console=ttyS0" });
    env.AIVM_E2E_IMAGE = path;
    env.AIVM_E2E_SHA = sha;
  });

  step("private netns with its own virtlogd and libvirtd", async () => {
    lab = await startLab(runDir, tag);
    figures.libvirtd = lab.mode === "private" ? `private, netns ${lab.ns}` : "the system libvirtd (already running)";
    await addLan(lab);
    baseline = await inventory(lab);
  }, 120_000);

  step("config init --defaults with the built image, unique names, one allowed port", async () => {
    const { AIVM_E2E_IMAGE: img, AIVM_E2E_SHA: sha } = env;
    await aivmOk(["config", "init", "--defaults", "--yes", "--image-url", `file://${img}`, "--image-sha256", sha!]);
    let text = uniqueNamesConfig(readFileSync(configFile, "utf8"), names, CACHE_HOME);
    text = setTomlKey(text, "defaults.firewall", "allow_tcp_ports", `[${PORT.allowed}]`);
    writeFileSync(configFile, text);
    await aivmOk(["config", "lint"]);
    const shown = JSON.parse((await aivmOk(["config", "show", "--json"])).stdout);
    const net = findNetwork(shown);
    gateway = net.gateway;
    subnetPrefix = net.subnet.split("/")[0]!.split(".").slice(0, 3).join(".") + ".";
    expect(gateway).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    vmDir = join(env.XDG_DATA_HOME!, "aivm", "vms", names.vm);
  });

  step("up --yes boots the guest and makes it reachable over SSH", async () => {
    const r = await aivmOk(["up", "--yes"], { timeoutMs: 20 * 60_000, live: true });
    figures["aivm up (cold)"] = secs(r.ms);
  }, 25 * 60_000);

  step("a second up changes nothing", async () => {
    const r = await aivmOk(["up", "--yes"], { timeoutMs: 5 * 60_000 });
    figures["aivm up (again)"] = secs(r.ms);
    expect(r.stderr + r.stdout).not.toMatch(/\b(created|started|defined)\b/i);
  });

  step("vm ssh -- echo ok; the remote exit code passes through", async () => {
    figures["guest boot to sshd"] = await bootToSshd();
    const r = await guest("echo ok");
    expect({ code: r.code, out: r.stdout.trim() }).toEqual({ code: 0, out: "ok" });
    expect((await guest("exit 7")).code).toBe(7);
  });

  step("vm ip prints the guest address in the network's subnet", async () => {
    const r = await aivmOk(["vm", "ip", "--vm", names.vm]);
    expect(r.stdout.trim()).toStartWith(subnetPrefix);
  });

  step("firewall: host port not allowed is unreachable, the allowed one is reachable", async () => {
    listeners.push(await listen(lab!.ns, gateway, PORT.denied));
    listeners.push(await listen(lab!.ns, gateway, PORT.allowed));
    const allowed = await guest(probeCommand(gateway, PORT.allowed));
    expect(allowed.stdout).toContain(TOKEN);
    const denied = await guest(probeCommand(gateway, PORT.denied));
    expect(denied.stdout).not.toContain(TOKEN);
    expect(denied.stdout).not.toContain("rc=0");
  });

  step("firewall: a block_cidrs address is unreachable while a non-blocked one is reached", async () => {
    if (!lab!.peer) return; // the system libvirtd: no LAN namespace to route to
    listeners.push(await listen(lab!.peer, LAN.blocked, PORT.lan));
    listeners.push(await listen(lab!.peer, LAN.open, PORT.lan));
    const open = await guest(probeCommand(LAN.open, PORT.lan));
    expect(open.stdout).toContain(TOKEN); // forwarding works: the next check is the firewall, not a missing route
    const blocked = await guest(probeCommand(LAN.blocked, PORT.lan));
    expect(blocked.stdout).not.toContain(TOKEN);
    expect(blocked.stdout).not.toContain("rc=0");
  });

  step("a file written in the guest survives vm down + vm up", async () => {
    const mark = `persist-${tag}`;
    expect((await guest(`echo ${mark} > ~/e2e-mark && sync && cat ~/e2e-mark`)).stdout.trim()).toBe(mark);
    const down = await aivmOk(["vm", "down", "--vm", names.vm, "--yes"], { timeoutMs: 5 * 60_000, live: true });
    figures["vm down"] = secs(down.ms);
    expect((await sh(priv(["virsh", "-q", "-c", URI, "domstate", names.vm]))).stdout.trim()).toBe("shut off");
    expect(down.stderr).not.toMatch(/forc/i); // the guest honours the ACPI shutdown
    const up = await aivmOk(["vm", "up", "--vm", names.vm, "--yes"], { timeoutMs: 15 * 60_000, live: true });
    const wait = await aivmOk(["vm", "wait", "--vm", names.vm], { timeoutMs: 15 * 60_000, live: true });
    figures["vm up + wait (second boot)"] = secs(up.ms + wait.ms);
    expect((await guest("cat ~/e2e-mark")).stdout.trim()).toBe(mark);
  }, 30 * 60_000);

  step("vm delete, fw remove, net destroy", async () => {
    if (KEEP) return;
    try { cpSync(join(vmDir, "console.log"), join(runDir, "console.log")); } catch {}
    await aivmOk(["vm", "delete", "--vm", names.vm, "--yes"], { timeoutMs: 5 * 60_000 });
    await aivmOk(["fw", "remove", names.net, "--yes"]);
    await aivmOk(["net", "destroy", names.net, "--yes"]);
    tornDown = true;
  });

  test("nothing is left: no domain, network, nft table, bridge, VM directory or daemon", async () => {
    if (!runDir || KEEP) return;
    if (state.failed) await collectArtifacts();
    const problems = await teardown();
    expect(problems).toEqual([]);
  }, 5 * 60_000);

  afterAll(async () => {
    if (runDir && !tornDown && !KEEP) {
      await collectArtifacts().catch(() => {});
      await teardown().catch((e) => console.error(`e2e: teardown: ${e}`));
    }
    figures["e2e wall time"] = secs(Date.now() - t0);
    if (KEEP && lab) console.error(keepNote());
    console.error(`e2e figures:\n${Object.entries(figures).map(([k, v]) => `  ${k}: ${v}`).join("\n")}`);
    if (runDir) writeFileSync(join(ensureDir(join(ROOT, ".cache")), "e2e-figures.txt"), JSON.stringify(figures, null, 2) + "\n", { flag: "w" });
  });
});

// ---------- helpers ----------

function findNetwork(shown: any): { gateway: string; subnet: string } {
  // the resolved view: look for the network record by name anywhere in it
  const stack = [shown];
  while (stack.length) {
    const v = stack.pop();
    if (v && typeof v === "object") {
      if (v.name === names.net && typeof v.gateway === "string" && typeof v.subnet === "string") return v;
      stack.push(...Object.values(v));
    }
  }
  throw new Error(`config show --json has no network ${names.net} with gateway and subnet`);
}

/** Seconds from kernel start to sshd start, on the guest's clock (sshd's start time in /proc, in clock ticks). */
async function bootToSshd(): Promise<string> {
  const r = await guest("t=$(cut -d' ' -f22 /proc/$(cat /run/sshd.pid)/stat); echo $t $(getconf CLK_TCK)");
  const [ticks, hz] = r.stdout.trim().split(/\s+/).map(Number);
  return ticks && hz ? `${(ticks / hz).toFixed(1)} s (guest clock)` : `n/a (${r.stdout.trim() || r.stderr.trim()})`;
}

let collected = false;
/** Keep the console log, the libvirt logs and the transcript in e2e/artifacts/<run>/. */
async function collectArtifacts(): Promise<void> {
  if (collected || !runDir) return;
  collected = true;
  const dest = ensureDir(join(ROOT, "e2e", "artifacts", basename(runDir)));
  const copy = (src: string, name = basename(src)) => {
    try { if (existsSync(src)) cpSync(src, join(dest, name), { recursive: true }); } catch {}
  };
  if (vmDir && existsSync(vmDir)) {
    for (const f of readdirSync(vmDir)) if (!/\.(qcow2|img|raw|iso)$/.test(f) && !/host_?key(?!.*pub)/i.test(f) && !f.endsWith("_key")) copy(join(vmDir, f), `vm-${f}`);
  }
  copy(`/var/log/libvirt/qemu/${names.vm}.log`, "libvirt-qemu.log");
  copy(lab?.libvirtdLog ?? join(runDir, "libvirtd.log"));
  copy(configFile, "config.toml");
  copy(join(runDir, "console.log"));
  if (lab) {
    const dump = async (argv: string[], name: string) => writeFileSync(join(dest, name), (await sh(argv)).stdout);
    await dump(inNs(lab, ["nft", "list", "ruleset"]), "nft-ruleset.txt").catch(() => {});
    await dump(inNs(lab, ["ip", "addr"]), "ip-addr.txt").catch(() => {});
    await dump(priv(["virsh", "-c", URI, "dumpxml", names.vm]), "domain.xml").catch(() => {});
  }
  copy(join(runDir, "transcript.log"));
  console.error(`e2e: artifacts kept in ${dest}`);
}

/** Undo everything (idempotent) and list what was left behind before the forced cleanup. */
async function teardown(): Promise<string[]> {
  const problems: string[] = [];
  for (const l of listeners.splice(0)) l.stop();
  if (lab && baseline) {
    const extra = added(baseline, await inventory(lab));
    for (const [k, v] of Object.entries(extra)) problems.push(`${k} left: ${v!.join(", ")}`);
    // forced cleanup of whatever the commands left
    if (extra.domains?.length) {
      await sh(priv(["virsh", "-q", "-c", URI, "destroy", names.vm]));
      await sh(priv(["virsh", "-q", "-c", URI, "undefine", names.vm, "--nvram"]));
      await sh(priv(["virsh", "-q", "-c", URI, "undefine", names.vm]));
    }
    for (const n of extra.networks ?? []) {
      await sh(priv(["virsh", "-q", "-c", URI, "net-destroy", n]));
      await sh(priv(["virsh", "-q", "-c", URI, "net-undefine", n]));
    }
    for (const t of extra.nftTables ?? []) await sh(inNs(lab, ["nft", "delete", ...t.replace(/^table\s+/, "").split(/\s+/)]));
  }
  if (vmDir && existsSync(vmDir)) {
    problems.push(`VM directory left: ${vmDir}`);
    await collectArtifacts();
    await sh(priv(["rm", "-rf", vmDir]));
  }
  if (lab) {
    const pids = { ...lab.pids };
    problems.push(...(await stopLab(lab)));
    for (const [what, pid] of Object.entries(pids)) if (alive(pid)) problems.push(`${what} (pid ${pid}) still running`);
    if (lab.ns && (await sh(priv(["ip", "netns", "pids", lab.ns]))).code === 0) problems.push(`netns ${lab.ns} still exists`);
    lab = null;
  }
  if (!state.failed && problems.length === 0) rmSync(runDir, { recursive: true, force: true });
  else if (runDir) await collectArtifacts();
  tornDown = true;
  return problems;
}

function keepNote(): string {
  const ns = lab?.ns ? `ip netns exec ${lab.ns} ` : "";
  return [
    "e2e: AIVM_E2E_KEEP=1: the VM, libvirtd and the namespaces are still running.",
    `  env: HOME=${env.HOME} XDG_CONFIG_HOME=${env.XDG_CONFIG_HOME} XDG_DATA_HOME=${env.XDG_DATA_HOME} XDG_CACHE_HOME=${env.XDG_CACHE_HOME}`,
    `  ssh:  ${ns}env HOME=${env.HOME} XDG_CONFIG_HOME=${env.XDG_CONFIG_HOME} XDG_DATA_HOME=${env.XDG_DATA_HOME} ${BIN} vm ssh --vm ${names.vm}`,
    `  clean up: ${ns}${BIN} vm delete --yes ...; kill ${lab?.pids.libvirtd ?? ""} ${lab?.pids.virtlogd ?? ""}; ip netns del ${lab?.ns ?? ""}; ip netns del ${lab?.peer ?? ""}`,
  ].join("\n");
}


