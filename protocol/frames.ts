/** Frame type bytes. Every frame on the wire, in both directions, starts with one of these. */
export const FRAME_HEADER = 0x48; // 'H': body is one JSON object in UTF-8
export const FRAME_DATA = 0x44; // 'D': body is CRC32C (u32 BE) of the payload, then the payload

export type Header = Record<string, unknown>;

export type Frame =
  | { readonly kind: 'header'; readonly header: Header }
  /** A header frame whose boundaries were intact but whose body is not a JSON object. */
  | { readonly kind: 'bad-header'; readonly reason: string }
  /** crcOk is false when the payload does not match its CRC32C; the framing itself is still intact. */
  | { readonly kind: 'data'; readonly payload: Buffer; readonly crcOk: boolean };

/**
 * A frame as FrameDecoder.pushUndecoded() returns it: a header frame's body not decoded yet (parseHeaderBody
 * turns it into a 'header' or 'bad-header' frame), in its own memory.
 */
export type UndecodedFrame = Exclude<Frame, { kind: 'header' } | { kind: 'bad-header' }> | { readonly kind: 'header-body'; readonly body: Buffer };
