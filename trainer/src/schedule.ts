/** The learning rate and the distillation weight of an epoch, from the recipe. */
import type { Recipe } from './recipe.js';

export function learningRate(recipe: Readonly<Recipe>, epoch: number): number {
  const base = recipe.optimizer.lr;
  const s = recipe.schedule;
  if (s.kind === 'cosine') return s.minLr + 0.5 * (base - s.minLr) * (1 + Math.cos((Math.PI * (epoch - 1)) / recipe.epochs));
  if (s.kind === 'step') return base * s.gamma ** Math.floor((epoch - 1) / s.everyEpochs);
  return base;
}

/** The kd weight after the DKD-style linear warm-up; 0 when the epoch has no teacher. */
export function kdWeight(recipe: Readonly<Recipe>, epoch: number, hasTeacher: boolean): number {
  if (!hasTeacher) return 0;
  return recipe.weights.kd * (recipe.warmupEpochs > 0 ? Math.min(1, epoch / recipe.warmupEpochs) : 1);
}
