import { TeacherError, type TeacherErrorKind } from '@distillate/shared/onnx';
import type { z } from 'zod';
/**
 * The one error type the HTTP layer turns into a response: `{ error: { code, message } }` with
 * `status`. Domain code throws these; it never sees `req` or `res`.
 */
export class AppError extends Error {
  override readonly name = 'AppError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new AppError(400, code, message);
export const notFound = (code: string, message: string) => new AppError(404, code, message);

const TEACHER_STATUS = { bad_request: 400, not_found: 404, bad_model: 422, provider_unavailable: 503, bad_output: 500 } as const satisfies Record<
  TeacherErrorKind,
  number
>;

/** The HTTP form of an error from shared code: teacher errors keep their code and get their status. */
export function toAppError(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err;
  if (err instanceof TeacherError) return new AppError(TEACHER_STATUS[err.kind], err.code, err.message);
  return undefined;
}

/** A request that failed its zod schema: 400, every issue in one line. */
export function zodToAppError(error: z.ZodError): AppError {
  const msg = error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
  return new AppError(400, 'invalid_request', msg);
}
