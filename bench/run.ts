// `make bench`: ratios measured in one run, written to bench/RESULTS.md. Figures, not assertions.
//  1. the everyday commands against their references (bench/cli.ts: libvirt's test driver, no daemon).
//  2. vm create with a 1 GiB and an 8 GiB base image (an overlay: the ratio should stay near 1).
//  3. aivm up of a created VM until it returns (SSH and cloud-init ready) against the guest's own boot time,
//     read from its serial console ("Cloud-init ... finished ... Up N seconds"), and aivm's own waiting overhead.
//  4. a second `aivm up` on the running, unchanged VM (goal: under 1 s).
//  5. the warm `aivm ssh DIR -- true` against a bare `ssh <vm> true`.
// Runs inside a private network namespace with its own libvirtd (the e2e harness), as root.
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, ensureDir, inNet, must, preflight, setTomlKey, sh, startLab, stopLab, type Lab } from "../e2e/harness.ts";
import { cliBench } from "./cli.ts";

const RUNS = Number(process.env.AIVM_BENCH_RUNS ?? 15);
const CACHE_HOME = process.env.AIVM_E2E_CACHE || "/var/tmp/aivm-e2e-cache";
const lines: string[] = [];
const say = (s: string) => { console.error(s); lines.push(s); };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeIt(argv: string[], runs = RUNS): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = await sh(argv);
    ms.push(performance.now() - t);
    if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return median(ms);
}

const missing = preflight();
if (missing.length) {
  console.error(`bench: skipped: missing ${missing.join(", ")}`);
  process.exit(0);
}
if (!existsSync(BIN)) await must(["make", "build"]);

const runDir = mkdtempSync("/var/tmp/aivm-bench-");
chmodSync(runDir, 0o755);
// the lab's libvirtd gets its mount namespace at start: binds made later under the run dir reach its virtiofsd only
// when the run dir is already a shared mount (a systemd host's / is shared; this one's is not)
await must(["mount", "--bind", runDir, runDir]);
await must(["mount", "--make-rshared", runDir]);
const home = ensureDir(join(runDir, "home"));
const env: Record<string, string> = {
  PATH: `${process.env.PATH}:/usr/sbin:/sbin`, HOME: home, NO_COLOR: "1", LANG: "C.UTF-8",
  XDG_CONFIG_HOME: ensureDir(join(runDir, "config")), XDG_DATA_HOME: ensureDir(join(runDir, "data")), XDG_CACHE_HOME: ensureDir(CACHE_HOME),
};
ensureDir(join(home, ".ssh"), 0o700);
await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(home, ".ssh", "id_aivm_ed25519")]);
const cfg = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");

let lab: Lab | null = null;
const aivm = (args: string[]) => inNet(lab!, [BIN, ...args], env);
const ok = async (args: string[]) => must(aivm(args), { timeoutMs: 20 * 60_000 });

try {
  const built = await must([BIN, "image", "build", "--debootstrap"], { env, timeoutMs: 30 * 60_000, live: true });
  const image = built.stdout.trim();
  const sha = image.split("/").pop()!.replace(/\.img$/, "");
  lab = await startLab(runDir, Math.random().toString(16).slice(2, 8));
  await ok(["config", "init", "--defaults", "--yes", "--image-url", `file://${image}`, "--image-sha256", sha]);

  // 1. the everyday commands
  for (const l of await cliBench(RUNS)) say(l);

  // 2. vm create with a 1 GiB and an 8 GiB base (fully allocated raw files, so a copy would show)
  say(`## vm create: 1 GiB vs 8 GiB base image`);
  const sizes: Record<string, number> = {};
  for (const gib of [1, 8]) {
    const raw = join(runDir, `base-${gib}g.raw`);
    await must(["fallocate", "-l", `${gib}G`, raw]);
    const h = (await must(["sha256sum", raw], { timeoutMs: 10 * 60_000 })).stdout.split(" ")[0]!;
    const name = `bench-${gib}g`;
    let text = readFileSync(cfg, "utf8");
    text += `\n[[vms]]\nname = "${name}"\nnetwork = "aivm-net"\ndisk_gib = 20\n\n[vms.image]\nurl = "file://${raw}"\nsha256 = "${h}"\n`;
    writeFileSync(cfg, text);
    await ok(["image", "fetch", "--vm", name]);
    await ok(["net", "create", "--yes"]);
    const ms: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await ok(["vm", "create", "--vm", name, "--yes"]);
      ms.push(performance.now() - t);
      await ok(["vm", "delete", "--vm", name, "--yes"]);
    }
    sizes[gib] = median(ms);
    say(`- ${gib} GiB base: ${sizes[gib]!.toFixed(0)} ms (median of 3)`);
  }
  say(`- ratio 8 GiB / 1 GiB: ${(sizes[8]! / sizes[1]!).toFixed(2)}`);

  // 3. up to SSH-ready vs the guest's own boot time
  say(`## aivm up (created VM) to SSH and cloud-init ready vs the guest's own boot`);
  let text = readFileSync(cfg, "utf8");
  text = setTomlKey(text, "defaults.vm", "name", '"bench-boot"');
  writeFileSync(cfg, text);
  await ok(["vm", "create", "--vm", "bench-boot", "--yes"]);
  const t = performance.now();
  await ok(["up", "--vm", "bench-boot", "--yes"]);
  const upMs = performance.now() - t;
  const upEnd = Date.now();
  const log = readFileSync(join(env.XDG_DATA_HOME!, "aivm", "vms", "bench-boot", "console.log"), "utf8");
  const m = /Cloud-init v\. \S+ finished at .*?Up ([\d.]+) seconds/.exec(log);
  const guestS = m ? Number(m[1]) : NaN;
  say(`- aivm up: ${(upMs / 1000).toFixed(1)} s; the guest's uptime when cloud-init finished: ${guestS.toFixed(1)} s (serial console)`);
  say(`- up minus the guest's boot to cloud-init done: ${(upMs / 1000 - guestS).toFixed(1)} s (libvirt start, firmware before the kernel's clock starts, and aivm's waiting)`);
  // aivm's own waiting overhead: from the moment cloud-init finished in the guest to `aivm up` returning,
  // with the guest clock's offset measured over ssh (midpoint of the round trip)
  const upReturned = upEnd;
  const t1 = Date.now();
  const probe = await ok(["vm", "ssh", "--vm", "bench-boot", "--shell", "date +%s.%N; stat -c %.9Y /var/lib/cloud/instance/boot-finished"]);
  const t2 = Date.now();
  const [guestNow, finishedAt] = probe.stdout.trim().split("\n").map(Number);
  const offset = guestNow! * 1000 - (t1 + t2) / 2;
  const finishedHost = finishedAt! * 1000 - offset;
  const returnedAt = upReturned;
  say(`- aivm's own waiting overhead (cloud-init finished in the guest -> aivm up returned): ${((returnedAt - finishedHost) / 1000).toFixed(2)} s (guest clock offset ${(offset / 1000).toFixed(2)} s, measured to +-${((t2 - t1) / 2000).toFixed(2)} s)`);

  // 4. a second `aivm up` on the running, unchanged VM: one virsh process, one nft read, one ssh session
  const again: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const r = await ok(["up", "--vm", "bench-boot", "--yes"]);
    again.push(performance.now() - t0);
    if (!/nothing changed/.test(r.stderr)) throw new Error(`bench: the second up changed something: ${r.stderr}`);
  }
  const upAgain = median(again);
  say(`## a second \`aivm up\` on the running, unchanged VM (median of 5)`);
  say(`- ${upAgain.toFixed(0)} ms (goal: under 1000 ms; ${upAgain < 1000 ? "within" : "OVER"}); before this change: 3.2-6.1 s`);

  // 5. the warm path of `aivm ssh DIR -- true` (VM running, folder mounted) against a bare `ssh <vm> true`
  const project = ensureDir(join(runDir, "project"));
  await ok(["ssh", project, "--vm", "bench-boot", "--yes", "--", "true"]);
  const tAivmSsh = await timeIt(aivm(["ssh", project, "--vm", "bench-boot", "--", "true"]), 7);
  const tSsh = await timeIt(inNet(lab, ["ssh", "-F", join(home, ".ssh", "config"), "bench-boot", "true"]), 7);
  say(`## aivm ssh DIR -- true (warm) vs ssh <vm> true (median of 7)`);
  say(`- aivm ssh: ${tAivmSsh.toFixed(0)} ms; bare ssh: ${tSsh.toFixed(0)} ms; ratio ${(tAivmSsh / tSsh).toFixed(2)} (target: at most 1.5)`);
  await ok(["vm", "delete", "--vm", "bench-boot", "--yes"]);
  await ok(["fw", "remove", "--yes"]);
  await ok(["net", "destroy", "--yes", "--force"]);
} finally {
  if (lab) for (const p of await stopLab(lab)) console.error(`bench: ${p}`);
  // every mount under the run dir (folder binds, export roots), deepest first, then the run dir itself
  const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) => m === runDir || m.startsWith(runDir + "/"));
  for (const m of [...new Set(mounts)].sort((a, b) => b.length - a.length)) await sh(["umount", "-l", m]);
}

const out = `# Benchmark results\n\nMeasured by \`make bench\` on ${new Date().toISOString().slice(0, 10)} (${(await sh(["nproc"])).stdout.trim()} cores, TCG guest).\n\n${lines.join("\n")}\n`;
writeFileSync(join(import.meta.dir, "RESULTS.md"), out);
console.log(out);
