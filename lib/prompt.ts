// One line question on stderr, answer from stdin. (consola's prompt draws on stdout and hangs without a TTY.)
import { createInterface } from "node:readline/promises";

export async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: !!process.stdin.isTTY });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}
