//! A hostile chunk-protocol peer as a process of its own, for end-to-end
//! tests: `hostile-peer FILE MISBEHAVIOUR` serves the bytes of FILE,
//! misbehaving as named (`flip-byte`, `other-blob`, `silent`, ... see
//! [`Misbehaviour`]), prints its address (ending in `/p2p/PEER_ID`) on one
//! line and runs until it is killed.

use std::convert::Infallible;
use std::io::Write;

use testkit::{HostilePeer, Misbehaviour};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(misbehaviour), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: hostile-peer FILE MISBEHAVIOUR".into());
    };
    let misbehaviour: Misbehaviour = misbehaviour.parse()?;
    let data = std::fs::read(&file).map_err(|e| format!("reading {file}: {e}"))?;
    let peer = HostilePeer::serving(&data, misbehaviour).await;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", peer.addr())?;
    stdout.flush()?;
    let forever: Infallible = std::future::pending().await;
    match forever {}
}
