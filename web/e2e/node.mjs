// Starts a real Veche node for the end-to-end tests: a temp data folder, a
// config on loopback with OS-chosen ports, users added offline, then `serve`
// until it prints the address of its HTTP gateway.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (web/..). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const CONFIG = `[server]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
`;

const GATEWAY_RE = /HTTP gateway:\s+(http:\/\/127\.0\.0\.1:\d+)/;
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;
const KEEP_OUTPUT = 1 << 20;

/** `VECHE_BIN`, or the debug build in this repository. */
export function vecheBin() {
  return process.env.VECHE_BIN || join(REPO, 'target', 'debug', 'veche');
}

/**
 * Runs the binary to completion, feeding `input` on stdin.
 * @param {string} bin @param {string[]} args @param {string} input
 * @returns {Promise<string>} what it printed
 */
export function run(bin, args, input) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolvePromise(output);
      else reject(new Error(`\`veche ${args.join(' ')}\` exited with ${code ?? signal}:\n${output}`));
    });
    child.stdin.on('error', () => {}); // it may exit before reading; the exit code tells.
    child.stdin.end(input);
  });
}

/**
 * @typedef {{ login: string, password: string }} TestUser
 * @typedef {{ url: string, data: string, output: () => string, stop: () => Promise<void> }} RunningNode
 */

/**
 * Starts a node with the given users. Rejects after `timeoutMs` (with the
 * node's output) if it never names its HTTP gateway.
 * @param {{ users?: TestUser[], timeoutMs?: number, bin?: string, config?: string }} [options]
 *   `config`: TOML sections appended to the node's configuration.
 * @returns {Promise<RunningNode>}
 */
export async function startNode({ users = [], timeoutMs = 60_000, bin = vecheBin(), config = '' } = {}) {
  if (!existsSync(bin)) {
    throw new Error(`No veche binary at ${bin}: build it with \`cargo build\` or set VECHE_BIN.`);
  }
  const data = await mkdtemp(join(tmpdir(), 'veche-e2e-'));
  const cleanup = async () => {
    if (!process.env.VECHE_E2E_KEEP) await rm(data, { recursive: true, force: true });
  };
  try {
    await writeFile(join(data, 'config.toml'), CONFIG + config);
    for (const { login, password } of users) {
      // The password goes on stdin as it is, with no newline after it.
      await run(bin, ['admin', '--data', data, 'user', 'add', login, '--password-file', '-'], password);
    }
  } catch (e) {
    await cleanup();
    throw e;
  }

  const child = spawn(bin, ['serve', '--data', data], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  let output = '';
  /** @type {Promise<void>} */
  const exited = new Promise((resolveExit) => child.on('close', () => resolveExit()));
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);

  const url = await new Promise((resolveUrl, reject) => {
    let pending = { stdout: '', stderr: '' };
    let found = false;
    const timer = setTimeout(() => {
      if (found) return;
      child.kill('SIGKILL');
      reject(new Error(`The node did not name its HTTP gateway within ${timeoutMs} ms. Output:\n${output}`));
    }, timeoutMs);
    /** @param {'stdout' | 'stderr'} stream @param {Buffer} chunk */
    const onData = (stream, chunk) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-KEEP_OUTPUT);
      if (found) return;
      const lines = (pending[stream] + text).split(/\r?\n/);
      pending[stream] = lines.pop() ?? '';
      for (const line of lines) {
        const m = GATEWAY_RE.exec(line.replace(ANSI_RE, ''));
        if (m) {
          found = true;
          clearTimeout(timer);
          resolveUrl(m[1]);
          return;
        }
      }
    };
    // The gateway line is on stdout; stderr is read too (logs may go there) and always drained.
    child.stdout.on('data', (chunk) => onData('stdout', chunk));
    child.stderr.on('data', (chunk) => onData('stderr', chunk));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (found) return;
      clearTimeout(timer);
      reject(new Error(`The node exited with ${code ?? signal} before serving. Output:\n${output}`));
    });
  }).catch(async (e) => {
    process.off('exit', killOnExit);
    await exited;
    await cleanup();
    throw e;
  });

  let stopping = null;
  return {
    url,
    data,
    output: () => output,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(timer);
        }
        process.off('exit', killOnExit);
        await cleanup();
      })();
      return stopping;
    },
  };
}
