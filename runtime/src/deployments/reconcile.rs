//! What a change in the registry means for the triggers running here, as pure decisions: the
//! follower ([`super::follow`]) reads the registry, asks these, and applies the answer.

use crate::manifest::Manifest;

/// What to do with a function's running triggers when its current version may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing runs and nothing is deployed, or the running version is the current one.
    Unchanged,
    /// Nothing runs here yet: start its triggers.
    Start,
    /// A new version with the same triggers and publish list: swap it into the running
    /// triggers, which keep their reads, permits and in-flight invocations.
    SwapInPlace,
    /// A new version whose triggers or publish list differ: start its triggers, then stop the
    /// old ones (which finish what they have in flight).
    Restart,
    /// The function was removed: stop its triggers.
    Stop,
}

/// Decides what `running` (the version and manifest running here, if any) becomes when the
/// registry's current version is `current`.
pub fn decide(running: Option<(u32, &Manifest)>, current: Option<(u32, &Manifest)>) -> Change {
    match (running, current) {
        (None, None) => Change::Unchanged,
        (None, Some(_)) => Change::Start,
        (Some(_), None) => Change::Stop,
        (Some((have, _)), Some((want, _))) if have == want => Change::Unchanged,
        (Some((_, old)), Some((_, new))) if same_wiring(old, new) => Change::SwapInPlace,
        (Some(_), Some(_)) => Change::Restart,
    }
}

/// What to do with a function's canary when the registry's canary may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryChange {
    /// The canary running here (or none) is the one wanted.
    Keep,
    /// Stop sending events to the canary running here, then start this one.
    Begin(u32),
    /// The canary ended: every event goes to the stable version.
    End,
}

/// Decides what the canary running here (`have`, its version) becomes when the registry's
/// canary is `wanted`.
pub fn decide_canary(have: Option<u32>, wanted: Option<u32>) -> CanaryChange {
    match (have, wanted) {
        (have, wanted) if have == wanted => CanaryChange::Keep,
        (_, Some(version)) => CanaryChange::Begin(version),
        (Some(_), None) => CanaryChange::End,
        (None, None) => CanaryChange::Keep,
    }
}

/// Whether two versions of a function read the same triggers and publish to the same streams,
/// so the new one can be swapped into the running triggers.
pub fn same_wiring(a: &Manifest, b: &Manifest) -> bool {
    let cron = |m: &Manifest| -> Vec<(String, String, String)> {
        m.tickers
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.schedule.expression().to_owned(),
                    t.schedule.timezone().to_owned(),
                )
            })
            .collect()
    };
    a.streams == b.streams && a.publish == b.publish && cron(a) == cron(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        let text = format!(
            "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = \"orders\"\n{extra}"
        );
        crate::manifest::parse_deployed("f", &text).expect("a valid manifest")
    }

    #[test]
    fn each_registry_change_has_one_meaning() {
        let v1 = manifest("");
        let config_only = manifest("[config]\ngreeting = \"hi\"\n");
        let more_concurrency = manifest("concurrency = 3\n");
        assert_eq!(decide(None, None), Change::Unchanged);
        assert_eq!(decide(None, Some((1, &v1))), Change::Start);
        assert_eq!(decide(Some((1, &v1)), Some((1, &v1))), Change::Unchanged);
        assert_eq!(decide(Some((1, &v1)), None), Change::Stop);
        assert_eq!(
            decide(Some((1, &v1)), Some((2, &config_only))),
            Change::SwapInPlace,
            "a new component or config with the same triggers keeps them running"
        );
        assert_eq!(
            decide(Some((1, &v1)), Some((2, &more_concurrency))),
            Change::Restart,
            "a trigger's settings changed: its reader must start again"
        );
        assert_eq!(
            decide(Some((2, &more_concurrency)), Some((1, &v1))),
            Change::Restart,
            "a rollback is a change like any other"
        );
    }

    #[test]
    fn publishing_elsewhere_or_a_new_schedule_is_new_wiring() {
        let cron = |schedule: &str| {
            crate::manifest::parse_deployed(
                "f",
                &format!(
                    "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.cron]]\nschedule = \"{schedule}\"\n"
                ),
            )
            .unwrap()
        };
        assert!(same_wiring(&cron("0 * * * * *"), &cron("0 * * * * *")));
        assert!(!same_wiring(&cron("0 * * * * *"), &cron("30 * * * * *")));
        let a = crate::manifest::parse_deployed(
            "f",
            "name = \"f\"\ncomponent = \"f.wasm\"\npublish = [\"a\"]\n",
        )
        .unwrap();
        let b = crate::manifest::parse_deployed(
            "f",
            "name = \"f\"\ncomponent = \"f.wasm\"\npublish = [\"b\"]\n",
        )
        .unwrap();
        assert!(!same_wiring(&a, &b));
        assert!(same_wiring(&a, &a.clone()));
    }

    #[test]
    fn a_canary_begins_ends_or_is_replaced() {
        assert_eq!(decide_canary(None, None), CanaryChange::Keep);
        assert_eq!(decide_canary(Some(3), Some(3)), CanaryChange::Keep);
        assert_eq!(decide_canary(None, Some(3)), CanaryChange::Begin(3));
        assert_eq!(decide_canary(Some(3), Some(4)), CanaryChange::Begin(4));
        assert_eq!(decide_canary(Some(3), None), CanaryChange::End);
    }
}
