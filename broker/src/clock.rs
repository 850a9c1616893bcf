//! Wall-clock time in Kafka's unit: milliseconds since the Unix epoch. The one place the
//! broker reads the system clock for timestamps, commit times and timers.

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
