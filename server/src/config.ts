import { z } from 'zod';

/** Environment read once at boot; flags override it. */
export const EnvSchema = z.object({
  DISTILLATE_MODELS: z.string().optional(),
  DISTILLATE_DATA: z.string().optional(),
  DISTILLATE_CACHE: z.string().optional(),
  DISTILLATE_HOST: z.string().optional(),
  DISTILLATE_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  DISTILLATE_TOKEN: z.string().optional(),
  DISTILLATE_EP: z.enum(['cuda', 'webgpu', 'cpu']).optional(),
  DISTILLATE_THREADS: z.coerce.number().int().positive().optional(),
  DISTILLATE_QUEUE: z.string().optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export const ServerConfigSchema = z.object({
  models: z.string().min(1),
  data: z.string().min(1),
  cache: z.string().min(1),
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(8080),
  token: z.string().optional(),
  provider: z.enum(['cuda', 'webgpu', 'cpu']).optional(),
  threads: z.number().int().positive().optional(),
  maxBatch: z.number().int().positive().default(64),
  maxWaitMs: z.number().nonnegative().default(5),
  maxQueueRows: z.number().int().positive().default(4096),
  maxBodyBytes: z
    .number()
    .int()
    .positive()
    .default(64 << 20),
  shardRows: z.number().int().positive().optional(),
  /** redis://[:password@]host:port[/db]: run jobs as shard tasks on BullMQ; absent: in process. */
  queue: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type ServerConfig = z.infer<typeof ServerConfigSchema>;
export type ServerConfigInput = z.input<typeof ServerConfigSchema>;

/** Merge flags over the environment and validate. Unknown EP names etc. fail here, at boot. */
export function resolveConfig(flags: Partial<ServerConfigInput>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const e = EnvSchema.safeParse(env);
  if (!e.success) throw new Error(`bad environment: ${e.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const defined = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  const merged = {
    models: e.data.DISTILLATE_MODELS,
    data: e.data.DISTILLATE_DATA,
    cache: e.data.DISTILLATE_CACHE,
    host: e.data.DISTILLATE_HOST,
    port: e.data.DISTILLATE_PORT,
    token: e.data.DISTILLATE_TOKEN,
    provider: e.data.DISTILLATE_EP,
    threads: e.data.DISTILLATE_THREADS,
    queue: e.data.DISTILLATE_QUEUE,
    logLevel: e.data.LOG_LEVEL,
    ...defined,
  };
  const c = ServerConfigSchema.safeParse(Object.fromEntries(Object.entries(merged).filter(([, v]) => v !== undefined)));
  if (!c.success) throw new Error(c.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; '));
  return c.data;
}
