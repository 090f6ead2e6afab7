//! Runs the simulator on an address for manual checks with real clients:
//! `cargo run -p router-one-simulator --example serve -- 127.0.0.1:8089 [ttft_ms] [tpot_ms]`.

use std::time::Duration;

use router_one_simulator::{SimConfig, serve};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let mut millis = || Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(0));
    let config = SimConfig {
        ttft: millis(),
        tpot: millis(),
        ..SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("simulator listening on http://{}", listener.local_addr()?);
    serve(listener, config).await
}
