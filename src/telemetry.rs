//! Logging setup: `RUST_LOG` filters, and `SWITCHYARD_LOG_FORMAT=json` turns
//! human-readable lines into JSON lines for log shippers.

use tracing_subscriber::EnvFilter;

/// Chooses JSON lines over human-readable output.
pub const ENV_LOG_FORMAT: &str = "SWITCHYARD_LOG_FORMAT";
/// What is logged when `RUST_LOG` is unset: our info, others' warnings.
const DEFAULT_FILTER: &str = "warn,switchyard=info";

/// Installs the global subscriber; logs go to stderr so stdout stays for
/// command output (`switchyard check`, the ops CLI).
pub fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
