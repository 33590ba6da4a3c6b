//! What the link to the store costs, measured from the reads themselves, and the rule that
//! turns it into "one request or two".
//!
//! A cold block read without a guide costs two round trips: the chunk's block table, then its
//! blocks. One request for the start of the chunk up to the end of the needed blocks costs
//! one round trip plus the transfer of the blocks not needed. That is cheaper when those
//! extra bytes take less time at the connection's rate than a round trip: `extra / rate <
//! rtt`, the bandwidth-delay product rule. At 30 ms per request and 400 Mbit/s per connection
//! a round trip is worth 1.5 MB; at 100 ms and 100 Mbit/s, 1.25 MB.
//!
//! Block reads no longer need the rule: where another chunk's table guides them, the table
//! and the guessed blocks are asked for together (one round trip, see `fetch::blocks`), and
//! requests sent together are merged only across small gaps, since their gaps cost the link
//! that every read shares, not a round trip. The meter keeps measuring (the figures are
//! reported, and the rule stays for reads that must choose between requests in sequence).
//!
//! Both figures are measured: a small answer (≤ [`SMALL`]) gives a round-trip sample, a large
//! one (≥ [`LARGE`]) a rate sample (its bytes over its time less the round trip); each is an
//! exponentially weighted mean. Below [`MIN_RTT`] (a local disk, an in-memory store) a second
//! request costs nothing worth saving and the rule never chooses the larger read.

use std::sync::Mutex;
use std::time::Duration;

/// Answers up to this size measure the round trip.
pub const SMALL: usize = 16 << 10;
/// Answers from this size on measure the rate.
pub const LARGE: usize = 128 << 10;
/// Round trips below this are not worth a larger read.
pub const MIN_RTT: Duration = Duration::from_millis(2);
/// Weight of a new sample.
const WEIGHT: f64 = 0.25;

/// The link as last measured (or assumed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Seconds from asking to the last byte of a small answer.
    pub rtt: f64,
    /// Bytes per second of one connection once the answer flows.
    pub rate: f64,
}

impl Link {
    /// Whether one request that also carries `extra` unneeded bytes is cheaper than a second
    /// round trip.
    pub fn one_request_cheaper(&self, extra: u64) -> bool {
        self.rtt >= MIN_RTT.as_secs_f64() && (extra as f64) / self.rate < self.rtt
    }
}

/// Measures the link from the answers of the reads that go to the store.
#[derive(Debug, Default)]
pub struct LinkMeter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rtt: Option<f64>,
    rate: Option<f64>,
    assumed: bool,
}

fn mean(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + WEIGHT * (new - o))
}

impl LinkMeter {
    /// A meter that keeps `link` and ignores measurements (configuration and tests).
    pub fn assume(link: Link) -> Self {
        Self {
            state: Mutex::new(State {
                rtt: Some(link.rtt),
                rate: Some(link.rate),
                assumed: true,
            }),
        }
    }

    /// Notes one answer of `bytes` that took `elapsed` from asking to its last byte.
    pub fn observe(&self, bytes: usize, elapsed: Duration) {
        let mut s = self.state.lock().expect("poisoned");
        if s.assumed {
            return;
        }
        let t = elapsed.as_secs_f64();
        if bytes <= SMALL {
            s.rtt = Some(mean(s.rtt, t));
        } else if let (true, Some(rtt)) = (bytes >= LARGE, s.rtt) {
            // Answers that came faster than a round trip say nothing about the rate.
            if t > rtt * 1.1 {
                s.rate = Some(mean(s.rate, bytes as f64 / (t - rtt)));
            }
        }
    }

    /// The link, once both its round trip and its rate are measured.
    pub fn estimate(&self) -> Option<Link> {
        let s = self.state.lock().expect("poisoned");
        Some(Link {
            rtt: s.rtt?,
            rate: s.rate?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_weighs_extra_bytes_against_a_round_trip() {
        // 30 ms, 400 Mbit/s: a round trip is worth 1.5 MB.
        let link = Link {
            rtt: 0.030,
            rate: 50e6,
        };
        assert!(link.one_request_cheaper(300_000));
        assert!(link.one_request_cheaper(1_400_000));
        assert!(!link.one_request_cheaper(1_600_000));
        // A local disk: never worth more bytes.
        let local = Link {
            rtt: 0.0001,
            rate: 1e9,
        };
        assert!(!local.one_request_cheaper(1));
    }

    #[test]
    fn the_meter_needs_both_a_round_trip_and_a_rate() {
        let m = LinkMeter::default();
        assert_eq!(m.estimate(), None);
        m.observe(300, Duration::from_millis(30));
        assert_eq!(m.estimate(), None, "no rate yet");
        // A large answer before the round trip is known is no rate sample; after, 2 MB in
        // 30 ms + 40 ms is 50 MB/s.
        m.observe(2_000_000, Duration::from_millis(70));
        let link = m.estimate().unwrap();
        assert!((link.rtt - 0.030).abs() < 1e-9);
        assert!((link.rate - 50e6).abs() < 1e3, "{link:?}");
        // Means move towards new samples, a quarter at a time.
        m.observe(300, Duration::from_millis(70));
        assert!((m.estimate().unwrap().rtt - 0.040).abs() < 1e-9);
        // Mid-sized answers and answers faster than a round trip change nothing.
        m.observe(50_000, Duration::from_millis(500));
        m.observe(1_000_000, Duration::from_millis(10));
        assert!((m.estimate().unwrap().rate - 50e6).abs() < 1e3);
    }

    #[test]
    fn an_assumed_link_ignores_measurements() {
        let link = Link {
            rtt: 0.1,
            rate: 12.5e6,
        };
        let m = LinkMeter::assume(link);
        m.observe(100, Duration::from_millis(1));
        assert_eq!(m.estimate(), Some(link));
    }
}
