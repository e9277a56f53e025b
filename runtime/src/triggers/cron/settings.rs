//! A function's cron trigger: the `[[triggers.cron]]` manifest section as written
//! ([`CronTriggerSettings`]) and its validation ([`from_settings`]). A cron trigger is two
//! things at run time: a [`Ticker`] writing ticks into the function's own tick stream, and an
//! ordinary stream trigger reading them, so the `retry` table and `dead_letter` work as on any
//! stream trigger.

use super::{
    CatchUp, DEFAULT_LATE_GRACE, MAX_LATE_GRACE, Schedule, ScheduleError, TICK_TYPE, Ticker,
    legacy_states, state_key, tick_stream,
};
use crate::delivery::{RetryPolicy, RetrySettings};
use crate::names::{self, GroupName, StreamName};
use crate::settings::{self, FieldError};
use crate::triggers::streams::limits::ClusterLimits;
use crate::triggers::streams::{
    DEAD_LETTER_SUFFIX, DEFAULT_BATCH, DEFAULT_BATCH_WINDOW, DEFAULT_CONCURRENCY, Instance, Start,
    StreamTriggerConfig,
};

/// One `[[triggers.cron]]` section, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronTriggerSettings {
    name: Option<String>,
    schedule: String,
    timezone: Option<String>,
    catch_up: Option<CatchUp>,
    late_grace: Option<String>,
    retry: Option<RetrySettings>,
    dead_letter: Option<String>,
}

/// The ticker and the tick-stream trigger the section at `at` asks for, of function
/// `function` (its default name and group) under the function's cluster-wide limits, or the
/// field at fault. `taken` are the function's cron triggers read before this one: names are
/// unique within a function.
pub fn from_settings(
    at: &str,
    t: CronTriggerSettings,
    function: &str,
    cluster: ClusterLimits,
    taken: &[Ticker],
) -> Result<(Ticker, StreamTriggerConfig), FieldError> {
    let name = t.name.unwrap_or_else(|| function.to_owned());
    settings::name(&format!("{at}.name"), &name, names::identifier(&name))?;
    settings::check(
        &format!("{at}.name"),
        &name,
        !taken.iter().any(|other| other.name == name),
        "a name no other cron trigger of this function uses",
    )?;
    let timezone = t.timezone.unwrap_or_else(|| "UTC".to_owned());
    let schedule = Schedule::parse(&t.schedule, &timezone).map_err(|e| {
        let (field, value) = if matches!(e, ScheduleError::Timezone(_)) {
            ("timezone", &timezone)
        } else {
            ("schedule", &t.schedule)
        };
        settings::error(
            &format!("{at}.{field}"),
            &format!("{value:?}"),
            &e.to_string(),
        )
    })?;
    let stream = tick_stream(&name);
    let retry = RetryPolicy::from_settings(&format!("{at}.retry"), t.retry)?;
    // The tick stream and the default dead-letter stream live under Eddy's prefix; a chosen
    // dead-letter stream is a user's name like any other.
    let own = |text: String| settings::named(&format!("{at}.name"), text, StreamName::eddy_own);
    let dead_letter = match t.dead_letter {
        None => own(format!("{stream}{DEAD_LETTER_SUFFIX}"))?,
        Some(chosen) if chosen == format!("{stream}{DEAD_LETTER_SUFFIX}") => own(chosen)?,
        Some(chosen) => settings::named(&format!("{at}.dead_letter"), chosen, StreamName::new)?,
    };
    let trigger = StreamTriggerConfig {
        stream: own(stream.clone())?,
        group: settings::named("name", function.to_owned(), GroupName::new)?,
        types: Some(vec![TICK_TYPE.to_owned()]),
        start: Start::Earliest,
        batch: DEFAULT_BATCH,
        concurrency: DEFAULT_CONCURRENCY,
        retry,
        dead_letter,
        instance: Instance::PerEvent,
        batch_window: DEFAULT_BATCH_WINDOW,
        retention: None,
        breaker: None,
        ordering: None,
        cluster,
        validate: false,
    };
    let late_grace = match &t.late_grace {
        None => DEFAULT_LATE_GRACE,
        Some(text) => settings::duration_where(
            &format!("{at}.late_grace"),
            text,
            |grace| grace <= MAX_LATE_GRACE,
            &format!("a duration of at most {MAX_LATE_GRACE:?}"),
        )?,
    };
    let state = state_key(&name);
    let legacy = legacy_states(&name);
    let ticker = Ticker {
        name,
        schedule,
        catch_up: t.catch_up.unwrap_or_default(),
        late_grace,
        stream,
        event_type: TICK_TYPE.to_owned(),
        data: None,
        trim: true,
        definition: None,
        legacy_states: legacy,
        state,
    };
    Ok((ticker, trigger))
}
