//! Rates written as `"N/s"` or `"N/min"`: a destination's `rate_limit`, the
//! pace of a resumed route or of a bulk replay.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A number of requests per second or per minute. Two rates are equal when
/// they allow the same pace (`"1/s"` and `"60/min"`).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    count: u32,
    per: Per,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Per {
    Second,
    Minute,
}

impl Per {
    fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
        }
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: write \"N/s\" or \"N/min\" with N a whole number from 1")]
pub struct RateError(String);

impl Rate {
    /// The time one request uses up: a second or a minute divided by the count.
    pub fn interval(self) -> Duration {
        self.per.duration() / self.count
    }

    /// Requests in one second at this rate, rounded up: the default burst.
    pub fn per_second_ceil(self) -> u32 {
        match self.per {
            Per::Second => self.count,
            Per::Minute => self.count.div_ceil(60),
        }
    }

    /// Requests per second, for figures.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.duration().as_secs_f64()
    }
}

impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        self.interval() == other.interval()
    }
}

impl Eq for Rate {}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || RateError(text.to_owned());
        let (count, unit) = text.trim().split_once('/').ok_or_else(invalid)?;
        let per = match unit.trim() {
            "s" => Per::Second,
            "min" => Per::Minute,
            _ => return Err(invalid()),
        };
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        if count == 0 {
            return Err(invalid());
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.unit())
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_second_and_per_minute() {
        let rate: Rate = "50/s".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_millis(20));
        assert_eq!(rate.per_second_ceil(), 50);
        assert_eq!(rate.to_string(), "50/s");
        let rate: Rate = " 3000 / min ".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_millis(20));
        assert_eq!(rate.per_second_ceil(), 50);
        assert_eq!(rate.to_string(), "3000/min");
        let slow: Rate = "1/min".parse().unwrap();
        assert_eq!(slow.per_second_ceil(), 1, "a burst is never zero");
        assert_eq!(slow.interval(), Duration::from_secs(60));
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        for text in [
            "", "50", "0/s", "-1/s", "50/h", "1.5/s", "50/sec", "x/s", "/s",
        ] {
            let err = text.parse::<Rate>().unwrap_err();
            assert!(err.to_string().contains("N/s"), "{text:?}: {err}");
        }
    }
}
