// Run the dispatcher's main() in-process (so an injected fake Runner is used) and capture what it writes.

import { main } from "../../bin/aivm.ts";


export async function runMain(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  let stdout = "";
  let stderr = "";
  process.stdout.write = ((s: string) => { stdout += s; return true; }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => { stderr += s; return true; }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stdout, stderr };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
    process.exitCode = 0;
  }
}
