//! `syncstore completions SHELL` and `syncstore man`: generated from the same clap definitions
//! as `--help`, so they never drift from it.

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use anyhow::Context;
use clap::CommandFactory;
use std::process::ExitCode;

/// Prints the completion script for the shell to stdout.
///
/// # Errors
/// Never, today; stdout errors end the process like any other output.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "syncstore",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `syncstore.1` and one page per command (`syncstore-sync.1`, …) into the directory.
///
/// # Errors
/// When the directory or a page cannot be written.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("could not create {}", args.dir.display()))?;
    let command = Cli::command();
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("could not write the man pages into {}", args.dir.display()))?;
    println!(
        "wrote the man pages into {} (try: man {}/syncstore.1)",
        args.dir.display(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
