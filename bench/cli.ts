// `make bench`, part 1: the everyday commands against their references, with no daemon and no VM. libvirt's
// built-in test driver (test:///default: a running domain "test" on a network "default", in the virsh process
// itself) stands in for libvirtd, so aivm's own cost is what the ratios show.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { line, pair } from "./pair.ts";

const ROOT = resolve(import.meta.dir, "..");
const BIN = join(ROOT, "dist/aivm");
const BUN = join(ROOT, "node_modules/.bin/bun");

/** The Python aivm (v0.5.0) on this machine kind, for these commands: the reference the issue recorded. */
export const PYTHON_AIVM_MS = "200-300 ms";

export async function cliBench(runs: number): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), "aivm-bench-cli-"));
  const hello = join(dir, "hello");
  writeFileSync(join(dir, "hello.ts"), 'console.log("hello");\n');
  // the same flags as `make build`
  const b = Bun.spawnSync([BUN, "build", join(dir, "hello.ts"), "--compile", "--minify", "--bytecode", "--format=esm", "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", "--outfile", hello]);
  if (b.exitCode !== 0) throw new Error(`bench: hello-world build failed: ${b.stderr.toString()}`);
  const noVm = join(dir, "novm.toml");
  writeFileSync(noVm, '[defaults.paths]\nlibvirt_uri = "test:///default"\n');
  const withVm = join(dir, "vm.toml");
  writeFileSync(withVm, '[defaults.paths]\nlibvirt_uri = "test:///default"\n\n[[networks]]\nname = "default"\nsubnet = "192.168.122.0/24"\nbridge = "virbr0"\n\n[[vms]]\nname = "test"\nnetwork = "default"\n');
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, NO_COLOR: "1", XDG_CONFIG_HOME: join(dir, "config"), XDG_DATA_HOME: join(dir, "data"), XDG_CACHE_HOME: join(dir, "cache") };
  const virsh = ["virsh", "-c", "test:///default", "list", "--all"];
  const out: string[] = [`## Everyday commands (pairs run in turn, ${runs} pairs each; the Python aivm took ${PYTHON_AIVM_MS} for each)`];

  const list = await pair([BIN, "list", "--json", "--config", noVm], virsh, runs, env);
  out.push(line("`aivm list --json`", list, "`virsh -c test:///default list --all`", 2.0));
  out.push(`- peak RSS of \`aivm list --json\`: ${list.rssA.toFixed(1)} MiB (goal: no higher than 53 MiB; ${list.rssA <= 53 ? "within" : "OVER"})`);
  out.push(line("`aivm status --json`, no VM in the store", await pair([BIN, "status", "--json", "--config", noVm], virsh, runs, env), "the same virsh", 2.5));
  out.push(line("`aivm status --json`, a recorded running VM (test driver)", await pair([BIN, "status", "--json", "--config", withVm], virsh, runs, env), "the same virsh", 3.0));
  for (const args of [["--help"], ["--version"], ["config", "show", "--config", withVm], ["vm", "xml", "--config", withVm], ["fw", "rules", "--config", withVm]]) {
    out.push(line(`\`aivm ${args.filter((a) => a !== withVm && a !== "--config").join(" ")}\``, await pair([BIN, ...args], [hello], runs, env), "a hello-world built with the same flags", 4.0));
  }
  return out;
}

if (import.meta.main) {
  for (const l of await cliBench(Number(process.env.AIVM_BENCH_RUNS ?? 15))) console.log(l);
}
