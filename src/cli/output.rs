//! What the command line shows people: sizes, tables, progress bars.
//!
//! Progress bars draw on stderr and only when it is a terminal (indicatif
//! hides them otherwise), so scripts and pipes see none.

use std::io::Write;
use std::time::Duration;

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Error;

/// `4.0 MiB`.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// `64.0 MiB/s`.
pub fn rate(bytes_per_sec: f64) -> String {
    // Rates are shown, not counted: the fraction of a byte does not matter.
    format!("{}/s", size(bytes_per_sec.max(0.0) as u64))
}

/// `1m 12s`, whole seconds.
pub fn duration(seconds: f64) -> String {
    let whole = Duration::from_secs(seconds.max(0.0).round() as u64);
    humantime::format_duration(whole).to_string()
}

/// A table whose columns line up, printed to stdout: a header row, then
/// the rows, cells separated by two spaces at least.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<&str> = cells.collect();
        writeln!(tw, "{}", text.join("\t"))
    };
    let written = line(&mut header.iter().copied())
        .and_then(|()| {
            rows.iter()
                .try_for_each(|row| line(&mut row.iter().map(String::as_str)))
        })
        .and_then(|()| tw.flush());
    written.map_err(|e| Error::io("cannot lay out a table", e))?;
    let text = tw.into_inner().map_err(|e| {
        Error::io(
            "cannot lay out a table",
            std::io::Error::other(e.to_string()),
        )
    })?;
    std::io::stdout()
        .write_all(&text)
        .map_err(|e| Error::io("cannot write to stdout", e))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot show the answer as JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A bar of bytes done out of `total`, with the rate and the time left
/// that indicatif measures: for copies made by this process.
pub fn transfer_bar(total: u64, prefix: &str) -> ProgressBar {
    bar(
        total,
        prefix,
        "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
}

/// A bar of bytes done out of `total` by the server, with the rate and the
/// time left it reports, in the message: for jobs.
pub fn job_bar(total: u64, prefix: &str) -> ProgressBar {
    bar(
        total,
        prefix,
        "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg}",
    )
}

/// The message of a job's bar: `64.0 MiB/s, ETA 12s`.
pub fn job_message(rate_bytes_per_sec: f64, eta_seconds: Option<f64>) -> String {
    match eta_seconds {
        Some(eta) => format!("{}, ETA {}", rate(rate_bytes_per_sec), duration(eta)),
        None => rate(rate_bytes_per_sec),
    }
}

fn bar(total: u64, prefix: &str, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(style);
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(4 << 20), "4.0 MiB");
        assert_eq!(size(0), "0 B");
        assert_eq!(rate(1024.0 * 1024.0), "1.0 MiB/s");
        assert_eq!(duration(72.4), "1m 12s");
        assert_eq!(job_message(2048.0, Some(3.0)), "2.0 KiB/s, ETA 3s");
    }
}
