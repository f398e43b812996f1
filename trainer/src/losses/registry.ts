/**
 * The distillation methods, one entry each: `distill: { method, params }` in a recipe names an
 * entry here, and the recipe's schema, the batch loss and both engines read this table.
 */
import { dist } from './dist.js';
import { dkd } from './dkd.js';
import { jsd } from './jsd.js';
import { kd } from './kd.js';
import { lskd } from './ls-kd.js';
import type { LossMethod } from './method.js';
import { nkd } from './nkd.js';
import { rkl } from './reverse-kl.js';
import { tvd } from './tvd.js';

export const distillMethods = {
  kd,
  dkd,
  nkd,
  dist,
  lskd,
  rkl,
  jsd,
  tvd,
} satisfies Record<string, LossMethod<{ readonly temperature: number }>>;
