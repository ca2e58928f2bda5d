//! End-to-end tests: the real `syncstore` binary, a server and clients on loopback, temp dirs.
//!
//! One test binary for the crate (see STYLE.md): modules below share `util`.

mod browser;
mod util;

mod accounts;
mod bench_smoke;
mod cli;
mod dav;
mod deltas;
mod exfat;
mod folder;
mod history;
mod in_place;
mod limits;
mod locks;
mod mass_delete;
mod modes;
mod recovery;
mod recovery_shared;
mod scale_out;
mod service;
mod small11;
mod streaming;
mod sync;
mod tls;
mod visible;
mod watch;
mod web;
mod web_http;
