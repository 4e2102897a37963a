//! One timed scenario: `concurrency` clients, each calling its request in
//! a loop until the time is up; rates and latency percentiles.

use std::{
    future::Future,
    time::{Duration, Instant},
};

pub struct Outcome {
    /// Successful requests per second.
    pub rate: f64,
    /// Readings per second (rate × readings per request).
    pub rows: f64,
}

pub async fn run<F, Fut>(
    label: &str,
    seconds: u64,
    concurrency: usize,
    rows_per_request: usize,
    make: F,
) -> Outcome
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in 0..concurrency {
        let make = make.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let sent = Instant::now();
                if make(client).await {
                    ok += 1;
                    latencies.push(sent.elapsed());
                } else {
                    failed += 1;
                }
            }
            (ok, failed, latencies)
        }));
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for w in workers {
        let (o, f, l) = w.await.expect("a worker");
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = ok as f64 / elapsed;
    let rows = rate * rows_per_request as f64;
    let fails = if failed > 0 {
        format!("  ({failed} failed)")
    } else {
        String::new()
    };
    println!(
        "{label:<44} {rate:>10.0} {:>12} {:>9.2} {:>9.2}{fails}",
        if rows_per_request > 0 {
            format!("{rows:.0}")
        } else {
            String::new()
        },
        pct(0.5),
        pct(0.99)
    );
    Outcome { rate, rows }
}

/// Runs the clients for `seconds` without reporting: a warm-up.
pub async fn quietly<F, Fut>(seconds: u64, concurrency: usize, make: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for client in 0..concurrency {
        let make = make.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                make(client).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("a worker");
    }
}

/// Request rates against a baseline measured just before and just after
/// each scenario (their mean). A shared machine drifts by tens of percent
/// within one run; a single baseline at the start would put that drift on
/// every ratio, in whichever direction it went.
pub struct Bracket {
    before: f64,
}

impl Bracket {
    pub fn new(first: f64) -> Self {
        Self { before: first }
    }

    /// `scenario`'s rate over the mean of the baselines around it; `after`
    /// is the next scenario's `before`.
    pub fn ratio(&mut self, scenario: &Outcome, after: f64) -> f64 {
        let mean = (self.before + after) / 2.0;
        self.before = after;
        scenario.rate / mean
    }

    /// Starts again from `now` (after scenarios measured against another
    /// baseline).
    pub fn restart(&mut self, now: f64) {
        self.before = now;
    }
}
