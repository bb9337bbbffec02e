//! Captured console output.
//!
//! Owns the bound on logs: a script can call `console.log` a million times, and the
//! caller must not have to store that. Lines past the bound are counted and reported as
//! one final line.

use crate::limits::{MAX_LOG_BYTES, MAX_LOG_LINES};

/// Which console method produced a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `console.debug`
    Debug,
    /// `console.log`
    Log,
    /// `console.info`
    Info,
    /// `console.warn`
    Warn,
    /// `console.error`
    Error,
}

impl LogLevel {
    pub(crate) fn parse(name: &str) -> LogLevel {
        match name {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Log,
        }
    }
}

/// One console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The console method.
    pub level: LogLevel,
    /// The arguments formatted and joined by spaces.
    pub message: String,
}

/// Lines kept so far, and how many were dropped.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: u64,
}

impl LogBuffer {
    /// Whether another line would be kept.
    pub fn accepting(&self) -> bool {
        self.dropped == 0 && self.lines.len() < MAX_LOG_LINES && self.bytes < MAX_LOG_BYTES
    }

    /// Keeps `message` (cut to the remaining byte budget) or counts it as dropped.
    pub fn push(&mut self, level: LogLevel, mut message: String) {
        if !self.accepting() {
            self.dropped += 1;
            return;
        }
        let room = MAX_LOG_BYTES - self.bytes;
        if message.len() > room {
            let mut cut = room;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("… (truncated)");
            self.bytes = MAX_LOG_BYTES;
        } else {
            self.bytes += message.len();
        }
        self.lines.push(LogLine { level, message });
    }

    /// Counts a line the script produced after the buffer was full.
    pub fn drop_one(&mut self) {
        self.dropped += 1;
    }

    /// The kept lines, plus one line saying how many were dropped.
    pub fn finish(mut self) -> Vec<LogLine> {
        if self.dropped > 0 {
            self.lines.push(LogLine {
                level: LogLevel::Warn,
                message: format!(
                    "{} further log lines dropped (limit {MAX_LOG_LINES} lines, {MAX_LOG_BYTES} bytes)",
                    self.dropped
                ),
            });
        }
        self.lines
    }
}
