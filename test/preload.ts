// Every unit test runs with colour off and an isolated HOME and XDG directories: no test may read or write
// the real ~/.ssh/config, config store or image cache.
import { mkdirSync, mkdtempSync } from "node:fs";
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
