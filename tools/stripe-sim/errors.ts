/**
 * Stripe's error envelope, `{ error: { type, code?, message, param?, doc_url? } }`, and the errors the
 * simulator raises. The stripe SDK (stripe-node 23.1.0, `Error.js` `generateV1Error`) picks the error
 * class from the status and `type`: 400/404 → `StripeInvalidRequestError` (or `StripeIdempotencyError`
 * when `type` is `idempotency_error`), 401 → `StripeAuthenticationError`, 402 `card_error` →
 * `StripeCardError`, 5xx → `StripeAPIError`.
 *
 * Every error also says in which phase it arose, because Stripe saves an idempotent result only once
 * "the execution of an endpoint begins": errors from checking the incoming parameters are not saved
 * (a retry with the same key runs again), errors from running the endpoint (an unknown customer, a
 * non-draft invoice) are (docs.stripe.com/api/idempotent_requests).
 */

export interface StripeErrorBody {
  type: "invalid_request_error" | "idempotency_error" | "api_error" | "card_error";
  code?: string;
  /** Card errors: the issuer's reason (e.g. `insufficient_funds`). */
  decline_code?: string;
  message: string;
  param?: string;
  doc_url?: string;
}

export type ErrorPhase = "validation" | "execution";

export class StripeSimError extends Error {
  readonly body: StripeErrorBody;

  constructor(
    readonly status: number,
    body: StripeErrorBody,
    readonly phase: ErrorPhase = "execution",
  ) {
    super(body.message);
    this.name = "StripeSimError";
    this.body = body.code
      ? { ...body, doc_url: `https://stripe.com/docs/error-codes/${body.code.replace(/_/g, "-")}` }
      : body;
  }
}

/** Stripe's code for "this part of Stripe's API is real but the simulator does not implement it". */
export const UNSUPPORTED_CODE = "stripe_sim_unsupported";

const invalid = (
  status: number,
  phase: ErrorPhase,
  message: string,
  extra: { code?: string; param?: string } = {},
): StripeSimError => new StripeSimError(status, { type: "invalid_request_error", ...extra, message }, phase);

export const parameterMissing = (param: string, message = `Missing required param: ${param}.`) =>
  invalid(400, "validation", message, { code: "parameter_missing", param });

export const parameterUnknown = (param: string) =>
  invalid(400, "validation", `Received unknown parameter: ${param}`, { code: "parameter_unknown", param });

export const parameterInvalidInteger = (param: string, value: string) =>
  invalid(400, "validation", `Invalid integer: ${value}`, { code: "parameter_invalid_integer", param });

export const parameterInvalidEmpty = (param: string) =>
  invalid(
    400,
    "validation",
    `You passed an empty string for '${param}'. We assume empty values are an attempt to unset a parameter; however '${param}' cannot be unset. You should remove '${param}' from your request or supply a non-empty value.`,
    { code: "parameter_invalid_empty", param },
  );

export const parametersExclusive = (params: string[]) =>
  invalid(400, "validation", `You may only specify one of these parameters: ${params.join(", ")}.`, {
    code: "parameters_exclusive",
    param: params[params.length - 1],
  });

/** A value of the wrong shape or out of range (Stripe gives these no `code`). */
export const parameterInvalid = (param: string, message: string) => invalid(400, "validation", message, { param });

/** A real Stripe parameter, header or expansion that the simulator does not model. */
export const unsupported = (param: string | undefined, what: string) =>
  invalid(
    400,
    "validation",
    `stripe-sim does not implement ${what}; Stripe accepts it. See tools/stripe-sim/README.md.`,
    param === undefined ? { code: UNSUPPORTED_CODE } : { code: UNSUPPORTED_CODE, param },
  );

/** `No such customer: 'cus_x'`: 404 for the object in the path, 400 for one named by a parameter. */
export const resourceMissing = (kind: string, id: string, param: string, status = param === "id" ? 404 : 400) =>
  invalid(status, "execution", `No such ${kind}: '${id}'`, { code: "resource_missing", param });

/** An error from running the endpoint (saved under the idempotency key). */
export const invalidRequest = (message: string, extra: { code?: string; param?: string; status?: number } = {}) => {
  const { status = 400, ...rest } = extra;
  return invalid(status, "execution", message, rest);
};

/** A declined payment: 402 `card_error`, as Stripe answers `POST /v1/invoices/{id}/pay` (saved). */
export const cardDeclined = (decline: { code: string; decline_code?: string; message: string }) =>
  new StripeSimError(402, { type: "card_error", ...decline }, "execution");
