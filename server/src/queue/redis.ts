/**
 * The queue setting: `redis://[user[:password]@]host:port[/db]`, the password from the URL or
 * DISTILLATE_QUEUE_PASSWORD. The password goes to the connection and nowhere else: `describe`
 * and every error message name the host, port and db only.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { AppError } from '../errors.js';

export interface RedisTarget {
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
}

export function parseQueueUrl(url: string, env: NodeJS.ProcessEnv = process.env): RedisTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AppError(400, 'bad_queue_url', `--queue must look like redis://[:password@]host:port[/db]; got something that is not a URL`);
  }
  if (u.protocol !== 'redis:') throw new AppError(400, 'bad_queue_url', `--queue must be a redis:// URL; got ${u.protocol}//…`);
  const db = u.pathname === '' || u.pathname === '/' ? 0 : Number(u.pathname.slice(1));
  if (!Number.isInteger(db) || db < 0) throw new AppError(400, 'bad_queue_url', `--queue: the database "${u.pathname.slice(1)}" is not a non-negative integer`);
  const port = u.port === '' ? 6379 : Number(u.port);
  const password = u.password !== '' ? decodeURIComponent(u.password) : env['DISTILLATE_QUEUE_PASSWORD'];
  const username = u.username !== '' ? decodeURIComponent(u.username) : undefined;
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    db,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined || password === '' ? {} : { password }),
  };
}

/** The target without its credentials, for logs and messages. */
export function describeTarget(t: RedisTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `redis://${host}:${t.port}/${t.db}`;
}

/** ioredis options for BullMQ (workers need maxRetriesPerRequest: null). */
export function connectionOptions(t: RedisTarget): RedisOptions {
  return {
    host: t.host,
    port: t.port,
    db: t.db,
    ...(t.username === undefined ? {} : { username: t.username }),
    ...(t.password === undefined ? {} : { password: t.password }),
    maxRetriesPerRequest: null,
  };
}

/** Connect once, PING, and disconnect: a clear one-line error at start instead of endless retries. */
export async function assertReachable(t: RedisTarget, timeoutMs = 3000): Promise<void> {
  const client = new Redis({
    ...connectionOptions(t),
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
  });
  // The socket's own error (ECONNREFUSED, WRONGPASS) says more than the "Connection is closed." that follows it.
  let cause: Error | undefined;
  client.on('error', (err: Error) => (cause ??= err));
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    const reason = ((cause ?? (err as Error)).message ?? String(err)).split('\n')[0]!;
    throw new AppError(503, 'queue_unreachable', `cannot reach Redis at ${describeTarget(t)}: ${reason}`);
  } finally {
    client.disconnect();
  }
}
