// One line question on stderr, answer from stdin. (consola's prompt draws on stdout and hangs without a TTY.)
// Ctrl-C at the prompt is an interruption (exit 130); Ctrl-D (end of input) is null, which every question reads
// as "no" (Runner.ask), never as the default of a [Y/n] question.
import { InterruptedError } from "./errors.ts";

export async function ask(question: string): Promise<string | null> {
  // loaded here, not at the top: a command that asks nothing does not pay for readline
  const { createInterface } = require("node:readline/promises") as typeof import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: !!process.stdin.isTTY });
  try {
    return await new Promise<string | null>((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (!settled) {
          settled = true;
          f();
        }
      };
      rl.on("SIGINT", () => settle(() => (process.stderr.write("\n"), reject(new InterruptedError()))));
      rl.on("close", () => settle(() => (process.stderr.write("\n"), resolve(null))));
      rl.question(question).then(
        (a) => settle(() => resolve(a)),
        (e: Error) => settle(() => (/ctrl\+?c|abort/i.test(`${e?.name} ${e?.message}`) ? reject(new InterruptedError()) : resolve(null))),
      );
    });
  } finally {
    rl.close();
  }
}
