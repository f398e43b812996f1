/** The trainer's one error type for a run that cannot go on: the CLI prints its message as one line. */
export class TrainingError extends Error {
  override readonly name = 'TrainingError';
}
