//! The `syncstore` binary: parses flags, sets up logging and signals, and calls the library.
//!
//! Exit codes: 0 success (and "in sync"), 1 "not in sync" (`status`, `sync --once`), 2 error.

mod cli;
mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug: print it and abort instead of running on in an unknown state.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!(
            "syncstore {}: internal error (a bug); aborting",
            env!("CARGO_PKG_VERSION")
        );
        std::process::abort();
    }));
    let args = cli::Cli::parse();
    if matches!(args.command, cli::Command::Sync(_)) {
        if let Err(err) = cmd::setup::reexec_without_token_in_argv() {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    }
    init_tracing();
    tune_the_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(args)) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", syncstore_client::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// Tunes glibc's allocator for a process that moves chunks of about 1 MiB through buffers.
///
/// Allocations of 4 MiB and more (upload packs, the chunker's read buffer) get their own
/// mappings, given back to the system when freed. By default glibc raises that threshold to the
/// largest block freed so far, after which such buffers come from per-thread arenas that keep
/// their memory: the sender's peak RSS crept towards 100 MiB over a 4 GiB file that way (W5).
///
/// Fixing the threshold also drops glibc's trim threshold to 128 KiB, so the heap gave back the
/// memory of every freed chunk and faulted it in, zeroed, for the next one: a seventh of the
/// server's and an eighth of B's CPU in W2 (perf, issue 18). Free memory at the top of a heap is
/// now kept up to 64 MiB, and at most two arenas exist, so what is kept stays bounded.
fn tune_the_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const LARGE: libc::c_int = 4 * 1024 * 1024;
        const KEEP_FREE: libc::c_int = 64 * 1024 * 1024;
        const ARENAS: libc::c_int = 2;
        // SAFETY: mallopt only changes allocator tuning; called before any other thread runs.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREE);
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). `SYNCSTORE_LOG_SPANS=1` also logs
/// each span as it closes, with its busy and idle time (a profiling aid).
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = if std::env::var_os("SYNCSTORE_LOG_SPANS").is_some_and(|v| v == "1") {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
