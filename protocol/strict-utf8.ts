// ignoreBOM keeps a leading byte-order mark in the text: a rewrite must give it back (fts-admin passwd).
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Text files whose every byte matters (the users file: a password is its bytes) decoded without
 * replacement: invalid UTF-8 would become U+FFFD and silently change a password, and a tool that rewrote
 * the file would write the U+FFFD back. Returns the text, or the 1-based number of the first line that is
 * not valid UTF-8.
 */
export function decodeStrictUtf8(bytes: Uint8Array): { text: string } | { badLine: number } {
  try {
    return { text: strict.decode(bytes) };
  } catch {
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0x0a) continue;
      try {
        strict.decode(bytes.subarray(start, i));
      } catch {
        return { badLine: line };
      }
      line++;
      start = i + 1;
    }
    return { badLine: line };
  }
}
