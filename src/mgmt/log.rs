//! Runtime log level (`PUT /api/v1/log/level`, `roost ctl log level`):
//! swaps the process's tracing `EnvFilter` through a
//! `tracing_subscriber::reload` handle. The binary creates it when it sets
//! up logging (`src/main.rs`); an embedding application may pass its own or
//! none (the endpoint then answers 501).

use std::sync::Mutex;

use tracing_subscriber::{reload, EnvFilter};

type ReloadFn = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Reloads the log filter and remembers the directive in effect.
pub struct LogControl {
    reload: ReloadFn,
    current: Mutex<String>,
}

/// Why a new level was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("not a valid log filter directive {directive:?}: {reason}")]
    Invalid { directive: String, reason: String },
    #[error("cannot reload the log filter: {0}")]
    Reload(String),
}

impl LogControl {
    /// `handle` reloads the `EnvFilter` layer of subscriber `S`; `initial`
    /// is the directive it was built with.
    pub fn new<S: 'static>(
        handle: reload::Handle<EnvFilter, S>,
        initial: impl Into<String>,
    ) -> Self {
        LogControl {
            reload: Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())),
            current: Mutex::new(initial.into()),
        }
    }

    /// The directive in effect.
    pub fn level(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Parses `directive` and installs it; nothing changes when it is invalid.
    pub fn set(&self, directive: &str) -> Result<(), LogError> {
        let directive = directive.trim();
        let invalid = |reason: String| LogError::Invalid {
            directive: directive.to_owned(),
            reason,
        };
        if directive.is_empty() {
            return Err(invalid("empty".into()));
        }
        // As at start: no ractor span per actor unless asked for (memory).
        let filter = EnvFilter::try_new(crate::cli::quiet_ractor(directive))
            .map_err(|e| invalid(e.to_string()))?;
        (self.reload)(filter).map_err(LogError::Reload)?;
        if let Ok(mut current) = self.current.lock() {
            directive.clone_into(&mut current);
        }
        tracing::info!(level = directive, "log_level_changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn set_changes_the_live_filter_and_rejects_bad_directives() {
        let (layer, handle) = reload::Layer::new(EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let control = LogControl::new(handle, "info");
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            control.set("debug").expect("valid");
            assert!(tracing::enabled!(tracing::Level::DEBUG));
        });
        assert_eq!(control.level(), "debug");
        assert!(matches!(
            control.set("roost=loud"),
            Err(LogError::Invalid { .. })
        ));
        assert!(matches!(control.set("  "), Err(LogError::Invalid { .. })));
        assert_eq!(control.level(), "debug");
    }
}
