/**
 * The daemon's configuration: one YAML (or JSON) file, defined by `schema.ts` (from which the shipped JSON Schema,
 * the types and the defaults come), loaded and validated by `load.ts`, summarised by `summary.ts`.
 */
export type { ConfigEnv } from "./env.js";
export { CONFIG_ENV_PREFIX } from "./env.js";
export { readPasswordFile } from "./files.js";
export type { PartialConfig } from "./load.js";
export { completeConfig, configProblemsError, loadConfig } from "./load.js";
export type { KeyPath, Problem } from "./problems.js";
export { editDistance, redactUrl, suggestKeys } from "./problems.js";
export { cameraUnderRecipe, recipeNames } from "./recipes.js";
export type { ChangedKey, KeyReloadRule, SchemaReloadRules } from "./reload.js";
export {
  cameraChanges,
  changedKeys,
  keepRestartKeys,
  keysWithoutReloadRule,
  RELOAD_RULE_TEXT,
  reloadRuleOf,
  reloadRules,
  schemaReloadRules,
} from "./reload.js";
export { COMMAND_TOPIC_LEVEL } from "./rules.js";
export * from "./schema.js";
export { formatConfigSummary } from "./summary.js";
export { loadConfigSchema, type SchemaNode, thresholdRuleProblem } from "./validate.js";
