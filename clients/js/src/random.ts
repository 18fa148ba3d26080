/** 16 random bytes as hex: idempotency keys. crypto.randomUUID needs a secure context, which an
 * add-on opened over plain http on the LAN is not; getRandomValues works everywhere. */
export function randomKey(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
