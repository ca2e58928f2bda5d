//! `syncstore demo`: a server on the embedded store and two synced folders, in one process.

use crate::cli::DemoArgs;
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use syncstore_client::{ApiClient, Engine, FolderConfig};
use syncstore_proto::{DeviceName, UserName};

/// Runs until Ctrl-C.
///
/// # Errors
/// When the demo directory cannot be created or the server cannot start.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let base = args.dir;
    let data = base.join("server-data");
    std::fs::create_dir_all(&data)
        .with_context(|| format!("could not create {}", data.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    // Accounts and tokens first, on the data directory, before the server opens it: the
    // offline admin helpers and a starting server must not race over its migrations.
    let user = UserName::new("demo")?;
    let mut folders = Vec::new();
    for name in ["laptop", "desktop"] {
        let folder = base.join(name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("could not create {}", folder.display()))?;
        let folder = folder.canonicalize()?;
        let device = DeviceName::new(name)?;
        let token = match FolderConfig::load(&folder)? {
            Some(saved) => saved.token,
            // The first device creates the demo user; later ones (or a re-run) add tokens to it.
            None => match syncstore_server::add_user(&data, &user, &device).await {
                Ok(token) => token,
                Err(_) => syncstore_server::add_token(&data, &user, &device).await?,
            },
        };
        let config = FolderConfig::new(vec![url.clone()], token);
        config.save(&folder)?;
        folders.push((folder, config));
    }
    let shutdown = super::shutdown_on_signals();
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(syncstore_server::run(
        listener,
        syncstore_server::ServerConfig::new(data.clone()),
        async move { server_shutdown.cancelled().await },
    ));
    let mut daemons = Vec::new();
    for (folder, config) in folders {
        let api = Arc::new(ApiClient::new(config.servers, config.token)?);
        let engine = Engine::open(&folder, api)?;
        let options = syncstore_client::daemon::DaemonOptions {
            scan_interval: Duration::from_secs(60),
        };
        daemons.push(tokio::spawn(syncstore_client::daemon::run(
            engine,
            options,
            shutdown.clone(),
        )));
    }
    let laptop = base.join("laptop");
    let desktop = base.join("desktop");
    println!(
        "syncstore demo: server at {url}, data in {}",
        data.display()
    );
    println!(
        "Two folders are syncing through it: {} and {}",
        laptop.display(),
        desktop.display()
    );
    println!("Try, in another terminal:");
    println!(
        "  echo hello > {}/hello.txt && sleep 0.2 && cat {}/hello.txt",
        laptop.display(),
        desktop.display()
    );
    println!(
        "  mkdir -p {}/photos/2026 && mv {}/hello.txt {}/photos/",
        desktop.display(),
        desktop.display(),
        desktop.display()
    );
    println!("  syncstore status {}", laptop.display());
    println!("  cd {} && syncstore ls -R", laptop.display());
    println!("Press Ctrl-C to stop.");
    for daemon in daemons {
        daemon.await.context("client task failed")??;
    }
    server.await.context("server task failed")??;
    Ok(ExitCode::SUCCESS)
}
