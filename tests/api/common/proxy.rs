//! A TCP proxy that a test can cut and restore, to put the database or Segment
//! out of reach the way a network or a restart does: open connections are
//! broken and new ones refused, then everything works again on the same port.
//! It can also stall: what the server sends is held back (a server that does
//! not answer, as a commit waiting for a standby that is gone), then passed on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stalled: watch::Sender<bool>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Arc<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(TcpProxy {
            addr: listener.local_addr().unwrap(),
            target,
            running: Mutex::new(None),
            stalled: watch::Sender::new(false),
        });
        proxy.serve(listener);
        proxy
    }

    /// Breaks every open connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(task) = self.running.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Accepts connections again, on the same address.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("the proxy's port is free again");
        self.serve(listener);
    }

    /// Holds back everything the server sends, on every connection.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Passes on what was held back, and what comes next.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let stalled = self.stalled.subscribe();
        // Aborting this task drops the listener and, with the JoinSet, every pipe.
        let task = tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let stalled = stalled.clone();
                pipes.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (client_reads, client_writes) = client.into_split();
                    let (server_reads, server_writes) = server.into_split();
                    let never = watch::Sender::new(false).subscribe();
                    tokio::join!(pipe(client_reads, server_writes, never), pipe(server_reads, client_writes, stalled));
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        *self.running.lock().unwrap() = Some(task);
    }
}

/// Copies `from` to `to`, holding each chunk while `stalled` says so.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || stalled.wait_for(|stalled| !*stalled).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
