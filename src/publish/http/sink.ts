/** The HTTP sink: Prometheus metrics, liveness and readiness, and the web console (`http.enabled`). */
import type { SinkFactory } from "../sink.js";
import { HttpInterface } from "./http.js";

export const httpSink: SinkFactory = {
  name: "http",
  create: ({ config, control, audit, logger, executor }) =>
    config.http.enabled
      ? new HttpInterface({
          config: config.http,
          control,
          logger,
          executor,
          records: config.records,
          collection: config.collection,
          audit,
        })
      : undefined,
};
