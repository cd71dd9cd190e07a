import { readFileSync } from "node:fs";
import path from "node:path";
import protobuf from "protobufjs";

/**
 * Sparkplug B payloads decoded with the specification's own schema (fixtures/sparkplug_b.proto, EPL-2.0) through
 * protobufjs, not with sparkplug-payload, the package the node encodes with: a mistake both sides of one library
 * share (a field number, a datatype code) would pass a round trip through it but not this decoder.
 */
export const SPEC_PROTO = path.resolve(
  import.meta.dirname,
  "../../../../test/publish/sparkplug/fixtures/sparkplug_b.proto",
);

const root = protobuf.parse(readFileSync(SPEC_PROTO, "utf8")).root;
const Payload = root.lookupType("org.eclipse.tahu.protobuf.Payload");
/** The schema's DataType enum, name → code. */
export const DATATYPES: Readonly<Record<string, number>> = root.lookupEnum(
  "org.eclipse.tahu.protobuf.DataType",
).values;
const TYPE_NAMES = new Map(Object.entries(DATATYPES).map(([name, code]) => [code, name]));

/** One metric as the wire has it: only the fields that were present. */
export interface SpecMetric {
  name?: string;
  alias?: number;
  timestamp?: number;
  datatype?: number;
  isHistorical?: boolean;
  isTransient?: boolean;
  isNull?: boolean;
  metadata?: unknown;
  properties?: unknown;
  intValue?: number;
  longValue?: number;
  floatValue?: number;
  doubleValue?: number;
  booleanValue?: boolean;
  stringValue?: string;
  bytesValue?: Uint8Array;
  datasetValue?: unknown;
  templateValue?: unknown;
  extensionValue?: unknown;
}

export interface SpecPayload {
  timestamp?: number;
  seq?: number;
  uuid?: string;
  body?: Uint8Array;
  metrics?: SpecMetric[];
}

/** The value fields of the schema's `oneof value`. */
export const VALUE_FIELDS = [
  "intValue",
  "longValue",
  "floatValue",
  "doubleValue",
  "booleanValue",
  "stringValue",
  "bytesValue",
  "datasetValue",
  "templateValue",
  "extensionValue",
] as const;

/** Decodes a payload; throws when the bytes are not a Payload message of the schema. */
export function decodeSpec(bytes: Uint8Array): SpecPayload {
  const message = Payload.decode(bytes);
  return Payload.toObject(message, { longs: Number, defaults: false, arrays: false }) as SpecPayload;
}

export function typeName(code: number | undefined): string | undefined {
  return code === undefined ? undefined : TYPE_NAMES.get(code);
}

/** The metric's value: whichever value field is present, or null for is_null, or undefined when none is. */
export function metricValue(metric: SpecMetric): unknown {
  if (metric.isNull === true) return null;
  for (const field of VALUE_FIELDS) if (metric[field] !== undefined) return metric[field];
  return undefined;
}

/** The value fields that are present (a metric must have exactly one, or none with is_null). */
export function valueFields(metric: SpecMetric): string[] {
  return VALUE_FIELDS.filter((field) => metric[field] !== undefined);
}

/** Encodes a payload with the spec's schema (the test host's commands), checked against it first. */
export function encodeSpec(payload: SpecPayload): Buffer {
  const problem = Payload.verify(payload);
  if (problem !== null) throw new Error(`not a Sparkplug B payload: ${problem}`);
  return Buffer.from(Payload.encode(Payload.fromObject(payload)).finish());
}
