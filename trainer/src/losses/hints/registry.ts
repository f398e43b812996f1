/**
 * The hint losses, one entry each: a recipe's `distill.hints[].loss` names an entry here, and
 * the recipe's schema, the student's hint heads and the batch loss read this table.
 */
import { at } from './at.js';
import { embed } from './embed.js';
import { fitnets } from './fitnets.js';

export const hintLosses = { fitnets, at, embed };
export type HintName = keyof typeof hintLosses;
