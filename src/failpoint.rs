//! Crash points for tests: `SWRM_FAILPOINT=<name>` makes a debug build
//! abort (as a power cut would) when it reaches the named point. Release
//! builds compile every point to nothing.

/// Aborts the process here if `SWRM_FAILPOINT` names this point.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    {
        static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let chosen = CHOSEN.get_or_init(|| std::env::var("SWRM_FAILPOINT").ok());
        if chosen.as_deref() == Some(name) {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
