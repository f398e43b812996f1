/** Recorded in every manifest so that a cache says which code wrote it. */
export const PRODUCER = { name: '@distillate/shared', version: '0.1.0' } as const;
