/**
 * Domain errors of teacher loading and preprocessing. They carry a stable `code` and a `kind`;
 * the server maps the kind to an HTTP status, the CLIs print the message.
 */
export type TeacherErrorKind = 'bad_request' | 'not_found' | 'bad_model' | 'provider_unavailable' | 'bad_output';

export class TeacherError extends Error {
  override readonly name = 'TeacherError';
  constructor(
    readonly kind: TeacherErrorKind,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
