//! The progress bar of `sync --once` and a foreground `sync` (stderr on a terminal only), and
//! the human forms of sizes, rates and durations that `status` shares.

use std::io::IsTerminal;
use std::time::Duration;
use syncstore_client::Progress;
use syncstore_proto::daemon::BatchProgress;

/// How often the bar is redrawn from the engine's progress.
const REFRESH: Duration = Duration::from_millis(200);

/// The bar's task; dropping it clears the bar.
pub struct Bar {
    task: tokio::task::JoinHandle<()>,
    bar: indicatif::ProgressBar,
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// Shows the transfers of `progress` on stderr while a batch runs, if stderr is a terminal.
pub fn show(progress: Progress) -> Option<Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::hidden();
    let style = indicatif::ProgressStyle::with_template("{bar:30} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH);
        let mut visible = false;
        loop {
            ticks.tick().await;
            match progress.batch() {
                Some(batch) => {
                    if !visible {
                        shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        visible = true;
                    }
                    shown.set_length(batch.bytes_total.max(1));
                    shown.set_position(batch.bytes_done.min(batch.bytes_total));
                    shown.set_message(progress_line(&batch));
                }
                None if visible => {
                    shown.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                    visible = false;
                }
                None => {}
            }
        }
    });
    Some(Bar { task, bar })
}

/// One line: files and bytes done of total, rate, time left.
pub fn progress_line(batch: &BatchProgress) -> String {
    let eta = match batch.eta_secs {
        Some(secs) => format!("ETA {}", secs_text(secs)),
        None => "ETA ?".to_owned(),
    };
    format!(
        "{}/{} files, {} of {}, {}/s, {eta}",
        batch.files_done,
        batch.files_total,
        bytes_text(batch.bytes_done),
        bytes_text(batch.bytes_total),
        bytes_text(batch.bytes_per_sec),
    )
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds as `42s`, `3m 05s`, `2h 01m`.
pub fn secs_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_names_files_bytes_rate_and_eta() {
        let batch = BatchProgress {
            files_done: 3,
            files_total: 10,
            bytes_done: 12 * 1024 * 1024,
            bytes_total: 40 * 1024 * 1024,
            elapsed_ms: 2000,
            bytes_per_sec: 6 * 1024 * 1024,
            eta_secs: Some(65),
        };
        assert_eq!(
            progress_line(&batch),
            "3/10 files, 12.0 MiB of 40.0 MiB, 6.0 MiB/s, ETA 1m 05s"
        );
        let start = BatchProgress {
            files_total: 1,
            bytes_total: 100,
            ..BatchProgress::default()
        };
        assert_eq!(
            progress_line(&start),
            "0/1 files, 0 B of 100 B, 0 B/s, ETA ?"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(secs_text(42), "42s");
        assert_eq!(secs_text(185), "3m 05s");
        assert_eq!(secs_text(7260), "2h 01m");
    }
}
