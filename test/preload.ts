// Every unit test runs with colour off and an isolated HOME and XDG directories: no test may read or write
// the real ~/.ssh/config, config store or image cache.
import { mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { afterAll } from "bun:test";
import { tmpdir } from "node:os";
import { join } from "node:path";

process.env.NO_COLOR = "1";
const home = mkdtempSync(join(tmpdir(), "aivm-test-home-"));
for (const d of [".config", ".cache", ".local/share"]) mkdirSync(join(home, d), { recursive: true });
process.env.HOME = home;
process.env.XDG_CONFIG_HOME = join(home, ".config");
process.env.XDG_CACHE_HOME = join(home, ".cache");
process.env.XDG_DATA_HOME = join(home, ".local/share");
delete process.env.AIVM_CONFIG;
delete process.env.SSH_CONNECTION;

// No unit test mounts anything on the host: a mount left under the temporary directory fails the file that left it
// (and is lazily unmounted, so no later recursive delete can reach through it into a real folder).
const TMP = tmpdir() + "/";
const tmpMounts = (): string[] => readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((t) => t.startsWith(TMP));
const mountsBefore = new Set(tmpMounts());
afterAll(() => {
  const left = tmpMounts().filter((t) => !mountsBefore.has(t));
  if (!left.length) return;
  for (const t of left.reverse()) Bun.spawnSync(["umount", "-l", t.replace(/\\040/g, " ")]);
  throw new Error(`a unit test left mounts on the host: ${left.join(", ")}`);
});
