// Eddy's event-bus module for functions in the OpenWhisk shape: `publishEvent(type, data)`
// publishes to the stream the manifest's `[event_bus]` table routes `type` to.
//
//   const { publishEvent } = require("eddy-events");   // CommonJS
//   import { publishEvent } from "eddy-events";          // ES module
export { publishEvent } from "./eddy.js";
