//! CPU time per event: the service's own (user + system, from the kernel's
//! accounting of the process, its finished threads included) and, on
//! PostgreSQL, that of every PostgreSQL process (backends, WAL writer,
//! checkpointer). Throughput swings on a shared machine; the CPU an event
//! costs does not, so this is the figure to compare across commits.

use std::collections::HashMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (Linux's `USER_HZ`, 100 on every
/// architecture the service runs on).
const TICKS_PER_SECOND: u64 = 100;

/// The CPU time used so far by the service and the database's processes.
pub struct CpuClock {
    service: u64,
    postgres: Option<HashMap<u32, u64>>,
}

/// CPU time between two readings.
pub struct CpuUsed {
    pub service: Duration,
    pub postgres: Option<Duration>,
}

impl CpuUsed {
    /// Microseconds per event: the service's and PostgreSQL's (NaN on SQLite).
    pub fn per_event(&self, events: u64) -> [f64; 2] {
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
        [micros(self.service), self.postgres.map_or(f64::NAN, micros)]
    }
}

impl CpuClock {
    pub fn read(service_pid: u32, with_postgres: bool) -> CpuClock {
        CpuClock { service: process_ticks(service_pid).unwrap_or(0), postgres: with_postgres.then(postgres_ticks) }
    }

    pub fn has_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// What was used since `earlier`. A PostgreSQL process started meanwhile
    /// counts whole; one that ended meanwhile is missed (the pool keeps its
    /// connections, so that is rare).
    pub fn since(&self, earlier: &CpuClock) -> CpuUsed {
        let postgres = self.postgres.as_ref().map(|now| {
            let before = earlier.postgres.as_ref();
            let ticks = now.iter().map(|(pid, t)| t - before.and_then(|b| b.get(pid)).copied().unwrap_or(0).min(*t));
            ticks_to_duration(ticks.sum())
        });
        CpuUsed { service: ticks_to_duration(self.service.saturating_sub(earlier.service)), postgres }
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SECOND)
}

/// utime + stime of a process, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the state (field 3) is the first here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Every PostgreSQL process on this machine, by pid.
fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashMap::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(|pid| Some((pid, process_ticks(pid)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_this_process_spins_is_counted() {
        let pid = std::process::id();
        let before = CpuClock::read(pid, false);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut used = CpuClock::read(pid, false).since(&before);
        while used.service < Duration::from_millis(50) && std::time::Instant::now() < deadline {
            let mut x = 0u64;
            for i in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(i));
            }
            std::hint::black_box(x);
            used = CpuClock::read(pid, false).since(&before);
        }
        assert!(used.service >= Duration::from_millis(50), "{:?}", used.service);
        assert!(used.postgres.is_none());
        assert!(used.per_event(10)[1].is_nan());
    }
}
