/** The public surface of the protocol package. client/ and admin/ import only this. */
export * from './codes.js';
export * from './crc32c.js';
export * from './decode.js';
export * from './encode.js';
export * from './errno.js';
export * from './errors.js';
export * from './frames.js';
export * from './limits.js';
export * from './messages.js';
export * from './names.js';
export * from './admin.js';
export * from './ip-address.js';
export * from './scram.js';
