// sha256 with Bun's native hasher (node:crypto costs startup time in every command that imports it).

/** sha256 of a string or bytes, as lowercase hex. */
export function sha256hex(data: string | Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** sha256 of a string or bytes, raw. */
export function sha256bytes(data: string | Uint8Array): Uint8Array {
  return new Uint8Array(new Bun.CryptoHasher("sha256").update(data).digest().buffer);
}

/** An incremental sha256 (for files read in chunks). */
export function sha256stream(): { update(chunk: Uint8Array): void; hex(): string } {
  const h = new Bun.CryptoHasher("sha256");
  return { update: (c) => void h.update(c), hex: () => h.digest("hex") };
}
