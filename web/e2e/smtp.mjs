// A minimal SMTP server on loopback: speaks just enough of the protocol for the
// node to hand over a message (no STARTTLS offered), and keeps what it is sent.
import { createServer } from 'node:net';

/**
 * @returns {Promise<{ port: number, next: () => Promise<string>, close: () => Promise<void> }>}
 *   `next` resolves with the body of the next message (in arrival order).
 */
export async function smtpSink() {
  /** @type {string[]} */
  const mails = [];
  /** @type {Array<(mail: string) => void>} */
  const waiting = [];
  const deliver = (/** @type {string} */ mail) => {
    const w = waiting.shift();
    if (w) w(mail);
    else mails.push(mail);
  };
  const server = createServer((socket) => {
    socket.setEncoding('utf8');
    let buffer = '';
    /** @type {string | null} */
    let data = null;
    socket.write('220 sink.test ESMTP\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk;
      let at;
      while ((at = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        if (data !== null) {
          if (line === '.') {
            deliver(data);
            data = null;
            socket.write('250 queued\r\n');
          } else {
            data += `${line}\n`;
          }
          continue;
        }
        const upper = line.toUpperCase();
        if (upper.startsWith('EHLO')) socket.write('250-sink.test\r\n250 8BITMIME\r\n');
        else if (upper === 'DATA') {
          data = '';
          socket.write('354 go ahead\r\n');
        } else if (upper === 'QUIT') {
          socket.end('221 bye\r\n');
        } else socket.write('250 OK\r\n');
      }
    });
    socket.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    next: () => {
      const mail = mails.shift();
      return mail !== undefined ? Promise.resolve(mail) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}
