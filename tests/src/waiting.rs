//! What a lab's wait saw before it gave up: each change of reason, with
//! the time it first appeared, so a failure tells the story of the wait
//! and not only its last poll.

use std::fmt;
use std::time::Duration;

/// The most changes kept; the first ones and the latest are what explain
/// a failure, so the middle is dropped (and counted).
const KEPT: usize = 24;

/// Consecutive distinct reasons a check failed, with when each began.
#[derive(Default)]
pub struct Reasons {
    seen: Vec<(Duration, String, usize)>,
    dropped: usize,
}

impl Reasons {
    /// Records that the check failed at `at` because of `why`.
    pub fn note(&mut self, at: Duration, why: String) {
        if let Some((_, last, polls)) = self.seen.last_mut()
            && *last == why
        {
            *polls += 1;
            return;
        }
        if self.seen.len() == KEPT {
            self.seen.remove(KEPT / 2);
            self.dropped += 1;
        }
        self.seen.push((at, why, 1));
    }

    /// A failure message: `headline`, the `context` (tables, log tails),
    /// and the headline again with the reasons, last, where a log
    /// shortened in the middle keeps them.
    pub fn report(&self, headline: &str, context: &str) -> String {
        format!("{headline}\n{context}\n{headline}; reasons seen:\n{self}")
    }
}

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (at, why, polls)) in self.seen.iter().enumerate() {
            if i == KEPT / 2 && self.dropped > 0 {
                writeln!(f, "  ... {} more changes", self.dropped)?;
            }
            writeln!(
                f,
                "  from {:>6.1}s ({polls} polls): {why}",
                at.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_the_middle_is_dropped() {
        let mut r = Reasons::default();
        r.note(Duration::from_secs(0), "a".into());
        r.note(Duration::from_secs(1), "a".into());
        r.note(Duration::from_secs(2), "b".into());
        assert_eq!(
            r.to_string(),
            "  from    0.0s (2 polls): a\n  from    2.0s (1 polls): b\n"
        );
        for i in 0..100 {
            r.note(Duration::from_secs(3 + i), format!("c{i}"));
        }
        let text = r.to_string();
        assert_eq!(text.lines().count(), KEPT + 1);
        assert!(text.contains("... 78 more changes"), "{text}");
        assert!(text.starts_with("  from    0.0s (2 polls): a\n"), "{text}");
        assert!(text.ends_with("c99\n"), "{text}");
        let report = r.report("x: not reached", "logs");
        assert!(report.starts_with("x: not reached\nlogs\nx: not reached; reasons seen:\n"));
        assert!(report.ends_with("c99\n"), "{report}");
    }
}
