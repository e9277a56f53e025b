//! Which functions run on this host, and at which version: the control plane's side of the
//! host.
//!
//! - `load`: the one way a function becomes runnable, from a manifest on disk or from the
//!   registry ([`LoadedFunction`]).
//! - `start`: starting one function's triggers ([`start_function`]).
//! - [`reconcile`]: what a registry change means for the triggers running here, as pure
//!   decisions with their tests.
//! - `follow`: the deployment follower that applies them as the deployments stream moves.
//! - `judge`: the canary judge each host runs while a canary deploy is on.
//!
//! The API's invoke runs what the follower loaded ([`Deployed`]), and loads through the same
//! path when the follower has not switched yet ([`current_or_load`]).

mod follow;
mod judge;
pub mod load;
pub mod reconcile;
mod start;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use follow::follow;
pub use load::{LoadVersionError, LoadedFunction};
pub use reconcile::same_wiring;
pub use start::start_function;

/// The deployed functions a host runs now, by name, with their version: what the API's invoke
/// runs, so it never loads (and compiles) a function per call.
pub type Deployed = Arc<std::sync::RwLock<BTreeMap<String, (u32, LoadedFunction)>>>;

/// Version `version` of deployed function `name`: the one this host runs if it is that
/// version, else loaded for this call (deployed a moment ago, not switched to here yet).
pub async fn current_or_load(
    deployed: &Deployed,
    engine: &crate::engine::Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
    version: &crate::registry::Version,
) -> Result<LoadedFunction, LoadVersionError> {
    let running = deployed
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .filter(|(v, _)| *v == version.version)
        .map(|(_, loaded)| loaded.clone());
    match running {
        Some(loaded) => Ok(loaded),
        None => load::version(engine, conn, name, version).await,
    }
}
