/**
 * A GET route's query string, validated against its TypeBox schema (the one the OpenAPI file is written from): one
 * reader for every route, so a parameter given twice, unknown, missing or malformed gets the same one-line 400.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TSchema } from "@sinclair/typebox";
import { Ajv, type ValidateFunction } from "ajv";
import { reply } from "./http-reply.js";

// query strings are text: numbers are coerced, defaults filled in, unknown parameters refused by the schemas
const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: false, strict: false });

/** A validator of a route's parameters; `T` is what they are once coerced (the schema's Static type). */
export function queryValidator<T = Record<string, string>>(schema: TSchema): ValidateFunction<T> {
  return ajv.compile<T>(schema);
}

/** The request's parameters, valid under `validate`; undefined after answering a 400 that names the bad one. */
export function queryParams<T>(
  req: IncomingMessage,
  res: ServerResponse,
  validate: ValidateFunction<T>,
): T | undefined {
  const params: Record<string, string> = {};
  const search = new URL(req.url ?? "/", "http://localhost").searchParams;
  for (const key of new Set(search.keys())) {
    const values = search.getAll(key);
    if (values.length > 1) {
      reply(res, 400, `parameter ${key}: given ${values.length} times; give it once\n`);
      return undefined;
    }
    params[key] = values[0]!;
  }
  if (validate(params)) return params;
  const error = validate.errors?.[0];
  const name =
    error?.keyword === "additionalProperties"
      ? String((error.params as { additionalProperty: string }).additionalProperty)
      : error?.keyword === "required"
        ? String((error.params as { missingProperty: string }).missingProperty)
        : (error?.instancePath.slice(1) ?? "");
  const problem =
    error?.keyword === "additionalProperties"
      ? "is not a parameter of this route"
      : error?.keyword === "required"
        ? "is required"
        : error?.message;
  reply(res, 400, `parameter ${name}: ${problem}\n`);
  return undefined;
}
