//! Eddy's black-box suite: the real `eddy` binary and the engine library, running real
//! components built from `functions/`. One test binary with modules keeps link time down.

mod api;
mod bad_input;
mod batches;
mod canary;
mod capabilities;
mod cluster;
mod cron;
mod deploy;
mod deploy_kit;
mod dlq;
mod engine;
mod first_hour;
mod flow;
mod invoke;
mod languages;
mod limits;
mod metrics;
mod once;
mod openwhisk;
mod order_functions;
mod ordering;
mod page;
mod records;
mod reliability;
mod replay;
mod saga;
mod schemas;
mod security;
mod status;
mod streams;
mod telemetry;
mod up;
