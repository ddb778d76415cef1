// A Web Push service on loopback for the end-to-end tests: it takes the node's
// encrypted POSTs as a browser vendor's push service would (201), and the test
// holds the subscription's keys, so it can decrypt what the node sent (RFC 8291,
// `aes128gcm` of RFC 8188) and hand exactly that to the service worker. The
// node accepts a loopback endpoint only with `[push] allow_loopback_endpoints`.
import { createDecipheriv, createECDH, hkdfSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

/**
 * A subscription's keys, as a browser makes them: a P-256 key pair and a
 * 16-byte authentication secret; `p256dh` and `auth` base64url, as
 * `PushSubscription.toJSON()` gives them.
 */
export function subscriptionKeys() {
  const ecdh = createECDH('prime256v1');
  const publicKey = ecdh.generateKeys();
  const auth = randomBytes(16);
  return { ecdh, publicKey, auth, p256dh: publicKey.toString('base64url'), authText: auth.toString('base64url') };
}

/**
 * Decrypts one `aes128gcm` push message body for the subscription `keys`.
 * @param {Buffer} body @param {ReturnType<typeof subscriptionKeys>} keys
 * @returns {string}
 */
export function decryptPush(body, keys) {
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  const serverKey = body.subarray(21, 21 + idlen);
  const records = body.subarray(21 + idlen);
  if (records.length > rs) throw new Error('a push message of more than one record');
  const secret = keys.ecdh.computeSecret(serverKey);
  const info = Buffer.concat([Buffer.from('WebPush: info\0'), keys.publicKey, serverKey]);
  const ikm = Buffer.from(hkdfSync('sha256', secret, keys.auth, info, 32));
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(records.subarray(records.length - 16));
  const padded = Buffer.concat([decipher.update(records.subarray(0, records.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 2, then any zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end -= 1;
  if (padded[end] !== 2) throw new Error('no last-record delimiter');
  return padded.subarray(0, end).toString('utf8');
}

/**
 * The push service: `url` is the subscription's endpoint; `next()` resolves with
 * the next POST (its headers and body) in arrival order.
 */
export async function pushService() {
  /** @type {Array<{ headers: import('node:http').IncomingHttpHeaders, body: Buffer }>} */
  const received = [];
  /** @type {Array<(m: { headers: import('node:http').IncomingHttpHeaders, body: Buffer }) => void>} */
  const waiting = [];
  const server = createServer((req, res) => {
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const m = { headers: req.headers, body: Buffer.concat(chunks) };
      const w = waiting.shift();
      if (w) w(m);
      else received.push(m);
      res.writeHead(201, { Location: `${req.url}/m${received.length}` });
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/push/subscription-1`,
    /** @returns {Promise<{ headers: import('node:http').IncomingHttpHeaders, body: Buffer }>} */
    next: () => {
      const m = received.shift();
      return m ? Promise.resolve(m) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}
