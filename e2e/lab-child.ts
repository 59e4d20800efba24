// Spawned by e2e/teardown.test.ts: start a lab in a run directory, say "ready <ns>", then wait to be killed.
import { startLab } from "./harness.ts";

const [runDir, tag] = process.argv.slice(2);
const lab = await startLab(runDir!, tag!);
process.stdout.write(`ready ${lab.ns}\n`);
setInterval(() => {}, 1 << 30);
